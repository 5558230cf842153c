//! Publishing the log to object storage (`[publish]` in the configuration): the settings and
//! their validation here; the sink in [`bucket`]; the consumer that plans and writes the
//! tiles, per-period bundles and digests, and the checkpoint, in [`publisher`].
//!
//! What lands in the bucket is the format `evident_core::tiles` and `evident_core::digest`
//! define; this module only decides when, and writes it.

pub mod bucket;
mod layout;
pub mod publisher;

pub use bucket::{Bucket, BucketError, StoreBucket};
pub use publisher::{PublishHandle, PublishStatus, Publisher};

use crate::consumers::ConsumerSettings;
use crate::http::AppState;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::path::PathBuf;
use std::sync::Arc;

/// Starts the publisher when `[publish]` names a target: opens the bucket (a bad setting is
/// logged and shown in the publisher's status) and runs the consumer on its cursor.
pub fn start(state: &AppState) -> Option<tokio::task::JoinHandle<()>> {
    let config = state.node().config().publish.clone();
    if !config.enabled() {
        return None;
    }
    let bucket = match StoreBucket::open(&config) {
        Ok(bucket) => bucket,
        Err(e) => {
            tracing::error!(error = %e, "publishing is configured but cannot start");
            let handle = PublishHandle::new(config.target.clone().unwrap_or_default());
            handle.fail(e.to_string());
            state.set_publisher(handle);
            return None;
        }
    };
    let bucket: Arc<dyn Bucket> = Arc::new(bucket);
    let handle = PublishHandle::new(bucket.describe());
    state.set_publisher(handle.clone());
    let settings = ConsumerSettings {
        batch_max: 1024,
        lag_warn_seconds: Some(config.lag_warn_seconds),
        lag_warn_events: (config.lag_warn_events > 0).then_some(config.lag_warn_events),
        ..ConsumerSettings::default()
    };
    let publisher = Publisher::new(config, bucket, handle);
    Some(crate::consumers::spawn(state, publisher, settings))
}

/// Where retention may prune up to when the node publishes: entries below the returned
/// sequence number are in full entry bundles in the bucket (the group the publisher's edge is
/// in stays, to complete its bundle from). `u64::MAX` when the node does not publish.
pub fn archived_below(node: &crate::Node) -> Result<u64, evident_store::StoreError> {
    let config = &node.config().publish;
    let Ok(name) = config.describe_target() else {
        return Ok(u64::MAX);
    };
    if !config.enabled() {
        return Ok(u64::MAX);
    }
    let cursor = node.store().consumer_cursor(&format!("publisher:{name}"))?;
    Ok(cursor.map_or(0, |c| c.next_seq / 256 * 256))
}

/// A secret setting: kept as given, never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The `[publish]` table. Without `target`, nothing is published (the default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PublishConfig {
    /// `s3://bucket/prefix` (prefix optional) or `file:///absolute/dir`.
    pub target: Option<String>,
    /// The S3 endpoint URL (`https://s3.example.com`, `http://127.0.0.1:8333`); unset: AWS.
    pub endpoint: Option<String>,
    /// The region requests are signed for; unset: `AWS_REGION`, `AWS_DEFAULT_REGION`, else
    /// `us-east-1`.
    pub region: Option<String>,
    /// Credentials given here win over `credentials_file`, which wins over the standard
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN` variables.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
    /// An AWS shared-credentials file (INI: `aws_access_key_id`, `aws_secret_access_key`,
    /// `aws_session_token` under `[profile]`).
    pub credentials_file: Option<PathBuf>,
    /// The section of `credentials_file` (`default`).
    pub profile: Option<String>,
    /// Virtual-hosted-style requests (`https://bucket.endpoint/key`) instead of path-style
    /// (`https://endpoint/bucket/key`, the default, which S3-compatible servers expect).
    pub virtual_hosted_style: bool,
    /// A PEM file of CA certificates to trust for the endpoint (besides the system's).
    pub ca_file: Option<PathBuf>,
    /// Publish every day at this UTC time (`HH:MM`, default `02:00`).
    pub daily_at: DailyAt,
    /// Also publish once this many entries were appended since the last publication
    /// (0, the default: not by count).
    pub every_events: u64,
    /// The length of a period (bundle, CSV and digest): `1d` (a UTC day, the default), or a
    /// number of hours, minutes or seconds (`1h`, `15m`, `10s`) dividing a day. Periods run
    /// from UTC midnight by entry recording time. Short periods are for testing.
    pub period: Period,
    /// Warn (event `evident.consumer.lagging`) when the oldest unpublished entry is this old
    /// (default 2 days: a nightly publisher lags up to a day by design)…
    pub lag_warn_seconds: u64,
    /// …or when this many entries wait (0, the default: not by count).
    pub lag_warn_events: u64,
}

impl Default for PublishConfig {
    fn default() -> Self {
        PublishConfig {
            target: None,
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            credentials_file: None,
            profile: None,
            virtual_hosted_style: false,
            ca_file: None,
            daily_at: DailyAt::default(),
            every_events: 0,
            period: Period::default(),
            lag_warn_seconds: 2 * 86_400,
            lag_warn_events: 0,
        }
    }
}

/// Where the publisher writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    S3 { bucket: String, prefix: String },
    Dir(PathBuf),
}

/// Access key, secret and token for S3.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl PublishConfig {
    /// Whether publishing is on.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// The target, parsed; the message names `publish.target` and the problem.
    pub fn parsed_target(&self) -> Result<Target, String> {
        let Some(target) = &self.target else {
            return Err("publish.target is not set".to_owned());
        };
        if let Some(rest) = target.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let valid_bucket = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                })
                && !bucket.starts_with(['-', '.'])
                && !bucket.ends_with(['-', '.']);
            if !valid_bucket {
                return Err(format!(
                    "publish.target {target:?}: {bucket:?} is not a bucket name (3 to 63 \
                     lowercase letters, digits, '-' and '.')"
                ));
            }
            let prefix = prefix.trim_matches('/');
            if prefix.split('/').any(|s| s == "." || s == "..")
                || prefix.contains("//")
                || prefix.chars().any(char::is_control)
            {
                return Err(format!(
                    "publish.target {target:?}: the prefix must be plain path segments"
                ));
            }
            return Ok(Target::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
            });
        }
        if let Some(path) = target.strip_prefix("file://") {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(format!(
                    "publish.target {target:?}: a file:// target needs an absolute path \
                     (file:///srv/evident-archive)"
                ));
            }
            return Ok(Target::Dir(path));
        }
        Err(format!(
            "publish.target {target:?} is neither s3://bucket/prefix nor file:///directory"
        ))
    }

    /// The target as shown in status and messages, and the publisher's cursor name
    /// (`s3://bucket/prefix`, `file:///dir`).
    pub fn describe_target(&self) -> Result<String, String> {
        Ok(match self.parsed_target()? {
            Target::Dir(dir) => format!("file://{}", dir.display()),
            Target::S3 { bucket, prefix } if prefix.is_empty() => format!("s3://{bucket}"),
            Target::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
        })
    }

    /// The credentials the settings give (`None`: the `AWS_*` environment's, if any).
    pub fn credentials(&self) -> Result<Option<Credentials>, String> {
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(id), Some(secret)) => {
                return Ok(Some(Credentials {
                    access_key_id: id.clone(),
                    secret_access_key: secret.0.clone(),
                    session_token: self.session_token.as_ref().map(|t| t.0.clone()),
                }));
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(
                    "publish.access_key_id and publish.secret_access_key go together".to_owned(),
                );
            }
            (None, None) => {}
        }
        let Some(file) = &self.credentials_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("publish.credentials_file {}: {e}", file.display()))?;
        let profile = self.profile.as_deref().unwrap_or("default");
        parse_credentials_file(&text, profile)
            .map(Some)
            .map_err(|problem| format!("publish.credentials_file {}: {problem}", file.display()))
    }

    /// Checks the settings; the first problem names the setting.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !self.enabled() {
            return Ok(());
        }
        self.parsed_target().map_err(|m| ("publish.target", m))?;
        if let Some(endpoint) = &self.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
                || endpoint.len() <= "https://".len()
            {
                return Err((
                    "publish.endpoint",
                    format!("{endpoint:?} is not an http:// or https:// URL"),
                ));
            }
        }
        if let Some(ca) = &self.ca_file {
            if !ca.is_file() {
                return Err((
                    "publish.ca_file",
                    format!("{} is not a readable file", ca.display()),
                ));
            }
        }
        self.credentials().map_err(|m| ("publish.credentials", m))?;
        if self.lag_warn_seconds == 0 {
            return Err((
                "publish.lag_warn_seconds",
                "must be greater than 0".to_owned(),
            ));
        }
        Ok(())
    }
}

/// The credentials of `[profile]` in an AWS shared-credentials file.
fn parse_credentials_file(text: &str, profile: &str) -> Result<Credentials, String> {
    let mut in_profile = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = section.trim() == profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            let value = value.trim().to_owned();
            match key.trim() {
                "aws_access_key_id" => id = Some(value),
                "aws_secret_access_key" => secret = Some(value),
                "aws_session_token" => token = Some(value),
                _ => {}
            }
        }
    }
    match (id, secret) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(Credentials {
            access_key_id,
            secret_access_key,
            session_token: token,
        }),
        _ => Err(format!(
            "no aws_access_key_id and aws_secret_access_key under [{profile}]"
        )),
    }
}

/// A time of day, UTC, in minutes after midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyAt(pub u32);

impl Default for DailyAt {
    fn default() -> Self {
        DailyAt(2 * 60)
    }
}

impl DailyAt {
    pub fn parse(text: &str) -> Result<DailyAt, String> {
        let bad = || format!("{text:?} is not a UTC time of day as HH:MM (00:00 to 23:59)");
        let (h, m) = text.trim().split_once(':').ok_or_else(bad)?;
        let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if h > 23 || m > 59 || text.trim().len() != 5 {
            return Err(bad());
        }
        Ok(DailyAt(h * 60 + m))
    }

    /// The first time at or after `now` (ms since the epoch) that is this time of day.
    pub fn next_after(&self, now: i64) -> i64 {
        let day = now.div_euclid(DAY_MS) * DAY_MS;
        let today = day + i64::from(self.0) * 60_000;
        if today > now { today } else { today + DAY_MS }
    }
}

impl Serialize for DailyAt {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:02}:{:02}", self.0 / 60, self.0 % 60))
    }
}

impl<'de> Deserialize<'de> for DailyAt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        DailyAt::parse(&text).map_err(serde::de::Error::custom)
    }
}

const DAY_MS: i64 = 86_400_000;

/// The length of a period in milliseconds; divides a day, so that periods start at UTC
/// midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period(pub i64);

impl Default for Period {
    fn default() -> Self {
        Period(DAY_MS)
    }
}

impl Period {
    pub fn parse(text: &str) -> Result<Period, String> {
        let text = text.trim();
        let bad = || {
            format!(
                "{text:?} is not a period: give 1d, or a number of hours, minutes or seconds \
                 (1h, 15m, 10s) that divides a day"
            )
        };
        let split = text.len().checked_sub(1).ok_or_else(bad)?;
        let (number, unit) = text.split_at(split);
        let number: i64 = number.parse().map_err(|_| bad())?;
        let unit_ms = match unit {
            "d" => DAY_MS,
            "h" => 3_600_000,
            "m" => 60_000,
            "s" => 1_000,
            _ => return Err(bad()),
        };
        let ms = number.checked_mul(unit_ms).ok_or_else(bad)?;
        if ms <= 0 || ms > DAY_MS || DAY_MS % ms != 0 {
            return Err(bad());
        }
        Ok(Period(ms))
    }

    /// The start of the period holding `at` (ms since the epoch).
    pub fn start_of(&self, at: i64) -> i64 {
        at.div_euclid(self.0) * self.0
    }
}

impl Serialize for Period {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = if self.0 % DAY_MS == 0 {
            format!("{}d", self.0 / DAY_MS)
        } else if self.0 % 3_600_000 == 0 {
            format!("{}h", self.0 / 3_600_000)
        } else if self.0 % 60_000 == 0 {
            format!("{}m", self.0 / 60_000)
        } else {
            format!("{}s", self.0 / 1000)
        };
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Period::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml_text: &str) -> Result<PublishConfig, String> {
        toml::from_str(toml_text).map_err(|e| e.to_string())
    }

    #[test]
    fn settings_parse_and_bad_ones_are_named() {
        let c = config(
            "target = \"s3://audit-archive/node-1\"\nendpoint = \"http://127.0.0.1:8333\"\n\
             daily_at = \"03:30\"\nperiod = \"1h\"\nevery_events = 5000\n\
             access_key_id = \"AK\"\nsecret_access_key = \"SK\"\n",
        )
        .unwrap();
        assert_eq!(
            c.parsed_target().unwrap(),
            Target::S3 {
                bucket: "audit-archive".into(),
                prefix: "node-1".into()
            }
        );
        assert_eq!(c.daily_at, DailyAt(3 * 60 + 30));
        assert_eq!(c.period, Period(3_600_000));
        c.validate().unwrap();
        assert!(
            !format!("{c:?}").contains("SK"),
            "the secret is never printed"
        );

        assert!(
            config("daily_at = \"25:00\"")
                .unwrap_err()
                .contains("HH:MM")
        );
        assert!(
            config("period = \"7h\"")
                .unwrap_err()
                .contains("divides a day")
        );
        assert!(config("bucket = \"x\"").unwrap_err().contains("bucket"));
        let bad = PublishConfig {
            target: Some("s3://No_Such".into()),
            ..PublishConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "publish.target");
        let relative = PublishConfig {
            target: Some("file://archive".into()),
            ..PublishConfig::default()
        };
        assert!(relative.validate().unwrap_err().1.contains("absolute"));
        let half = PublishConfig {
            target: Some("s3://bucket".into()),
            access_key_id: Some("AK".into()),
            ..PublishConfig::default()
        };
        assert!(half.validate().unwrap_err().1.contains("go together"));
        assert!(
            PublishConfig::default().validate().is_ok(),
            "off by default"
        );
    }

    #[test]
    fn credentials_file_profiles_and_schedule_arithmetic() {
        let text = "[default]\naws_access_key_id = A\naws_secret_access_key = B\n\
                    [other]\naws_access_key_id=C\naws_secret_access_key=D\naws_session_token=E\n";
        let other = parse_credentials_file(text, "other").unwrap();
        assert_eq!(other.access_key_id, "C");
        assert_eq!(other.session_token.as_deref(), Some("E"));
        assert_eq!(
            parse_credentials_file(text, "default")
                .unwrap()
                .secret_access_key,
            "B"
        );
        assert!(parse_credentials_file(text, "none").is_err());

        let at = DailyAt::parse("02:00").unwrap();
        let midnight = 20_000 * DAY_MS;
        assert_eq!(at.next_after(midnight), midnight + 7_200_000);
        assert_eq!(
            at.next_after(midnight + 7_200_000),
            midnight + DAY_MS + 7_200_000
        );
        let hour = Period::parse("1h").unwrap();
        assert_eq!(hour.start_of(midnight + 3_600_001), midnight + 3_600_000);
        assert_eq!(Period::parse("1d").unwrap(), Period::default());
        assert!(Period::parse("0s").is_err());
        assert!(Period::parse("2d").is_err());
    }
}
