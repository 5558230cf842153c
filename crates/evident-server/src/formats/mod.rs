//! SIEM payload formats: one committed entry rendered as an OCSF, ECS or CEF record, one line
//! each. The forwarder uses [`render`] as the syslog MSG body and the export route and CLI
//! write one record per line; the mappings are documented in `docs/SIEM-MAPPINGS.md`.
//!
//! What the three formats share lives here: the one rule that sorts actions into event
//! classes ([`EventClass`]), the verb read from an action's last segment, and the integrity
//! coordinates ([`Coordinates`]) every record carries.

pub mod cef;
pub mod ecs;
pub mod ocsf;

use evident_core::SealedEntry;
use std::fmt;
use std::str::FromStr;

/// A SIEM payload format. In configuration files it is its name (`format = "ocsf"`); an
/// unknown name is refused with [`UnknownFormat`]'s message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum SiemFormat {
    /// Open Cybersecurity Schema Framework 1.5.0, one JSON object per record.
    Ocsf,
    /// Elastic Common Schema, one JSON document per record.
    Ecs,
    /// ArcSight Common Event Format, one `CEF:0|…` line per record.
    Cef,
}

impl SiemFormat {
    pub const ALL: [SiemFormat; 3] = [SiemFormat::Ocsf, SiemFormat::Ecs, SiemFormat::Cef];

    /// The one text name: `ocsf`, `ecs` or `cef`.
    pub fn as_str(self) -> &'static str {
        match self {
            SiemFormat::Ocsf => "ocsf",
            SiemFormat::Ecs => "ecs",
            SiemFormat::Cef => "cef",
        }
    }

    /// Whether each record is a JSON object (an export of it is NDJSON).
    pub fn is_json(self) -> bool {
        !matches!(self, SiemFormat::Cef)
    }
}

impl TryFrom<String> for SiemFormat {
    type Error = UnknownFormat;

    fn try_from(name: String) -> Result<SiemFormat, UnknownFormat> {
        name.parse()
    }
}

impl From<SiemFormat> for &'static str {
    fn from(format: SiemFormat) -> &'static str {
        format.as_str()
    }
}

impl fmt::Display for SiemFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A format name that is none of `ocsf`, `ecs`, `cef`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown SIEM format \"{0}\": expected ocsf, ecs or cef")]
pub struct UnknownFormat(pub String);

impl FromStr for SiemFormat {
    type Err = UnknownFormat;

    fn from_str(name: &str) -> Result<SiemFormat, UnknownFormat> {
        SiemFormat::ALL
            .into_iter()
            .find(|f| f.as_str() == name)
            .ok_or_else(|| UnknownFormat(name.to_owned()))
    }
}

/// Renders one entry as one record of `format`: a single line without a line end (any line
/// break inside a value is escaped). `node_id` is the node reporting the entry (the observer /
/// device host in the records); the entry's own node id stays in its integrity coordinates.
pub fn render(format: SiemFormat, entry: &SealedEntry, node_id: &str) -> String {
    match format {
        SiemFormat::Ocsf => ocsf::render(entry, node_id),
        SiemFormat::Ecs => ecs::render(entry, node_id),
        SiemFormat::Cef => cef::render(entry, node_id),
    }
}

/// The product version every record names.
pub const PRODUCT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What kind of activity an action reports; the same rule decides the OCSF class, the ECS
/// category and the CEF `cat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventClass {
    /// `auth.*` and the node's own `evident.auth.*`: a credential presented.
    Authentication,
    /// Key and user management: `user.*`, `users.*`, `account.*`, `key.*`, `keys.*`,
    /// `api_key.*` and the node's own `evident.key.*`.
    AccountChange,
    /// Everything else.
    ApiActivity,
}

const AUTHENTICATION_PREFIXES: [&str; 2] = ["auth", "evident.auth"];
const ACCOUNT_CHANGE_PREFIXES: [&str; 7] = [
    "user",
    "users",
    "account",
    "key",
    "keys",
    "api_key",
    "evident.key",
];

/// Whether `action` is `prefix` or lies under it (`prefix.` …).
fn under(action: &str, prefix: &str) -> bool {
    action
        .strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

impl EventClass {
    /// The class of an action (see the variants for the rule).
    pub fn of(action: &str) -> EventClass {
        if AUTHENTICATION_PREFIXES.iter().any(|p| under(action, p)) {
            EventClass::Authentication
        } else if ACCOUNT_CHANGE_PREFIXES.iter().any(|p| under(action, p)) {
            EventClass::AccountChange
        } else {
            EventClass::ApiActivity
        }
    }

    /// Name used for the CEF `cat` and the ECS `evident.class`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventClass::Authentication => "authentication",
            EventClass::AccountChange => "account_change",
            EventClass::ApiActivity => "api_activity",
        }
    }
}

/// The verb an action ends in, normalized: the last segment of `user.password.changed` is
/// `changed`, and the last two are looked at for compound verbs (`password` + `reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Login,
    Logout,
    Create,
    Read,
    Update,
    Delete,
    Enable,
    Disable,
    Lock,
    Unlock,
    PasswordChange,
    PasswordReset,
    MfaEnable,
    MfaDisable,
    Other,
}

impl Verb {
    pub fn of(action: &str) -> Verb {
        let mut segments = action.rsplit('.');
        let last = segments.next().unwrap_or("");
        let before = segments.next().unwrap_or("");
        let has = |word: &str| before == word || last.contains(word);
        if has("password") {
            return if last.contains("reset") {
                Verb::PasswordReset
            } else {
                Verb::PasswordChange
            };
        }
        if has("mfa") {
            if last.contains("disable") || last.contains("remove") || last.contains("delete") {
                return Verb::MfaDisable;
            }
            if last.contains("enable") || last.contains("add") || last.contains("enrol") {
                return Verb::MfaEnable;
            }
        }
        match last {
            "login" | "logon" | "signin" | "sign_in" | "logged_in" | "signed_in" => Verb::Login,
            "logout" | "logoff" | "signout" | "sign_out" | "logged_out" | "signed_out" => {
                Verb::Logout
            }
            "create" | "created" | "add" | "added" | "appended" | "issued" | "registered"
            | "invited" => Verb::Create,
            "read" | "get" | "viewed" | "listed" | "queried" | "searched" | "exported"
            | "downloaded" | "verified" | "accessed" => Verb::Read,
            "update" | "updated" | "change" | "changed" | "modified" | "set" | "renamed"
            | "rotated" | "granted" | "assigned" => Verb::Update,
            "delete" | "deleted" | "remove" | "removed" | "purged" | "destroyed" => Verb::Delete,
            "enable" | "enabled" | "activated" | "reactivated" | "restored" => Verb::Enable,
            "disable" | "disabled" | "deactivated" | "suspended" | "revoked" | "expired" => {
                Verb::Disable
            }
            "lock" | "locked" => Verb::Lock,
            "unlock" | "unlocked" => Verb::Unlock,
            _ => Verb::Other,
        }
    }
}

/// The integrity coordinates of an entry, as every format carries them: enough for a
/// receiver to find the entry in an export or a proof and to check its hash and seal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinates {
    /// Sequence number in the node's log.
    pub seq: u64,
    /// The node whose log holds the entry.
    pub node_id: String,
    /// Hex SHA-256 entry hash.
    pub entry_hash: String,
    /// Hex HMAC-SHA-256 seal.
    pub seal: String,
    /// Index of the entry's leaf in the RFC 6962 Merkle tree (the log is dense from 0, so it
    /// equals the sequence number).
    pub leaf_index: u64,
}

impl Coordinates {
    pub fn of(entry: &SealedEntry) -> Coordinates {
        Coordinates {
            seq: entry.event.seq,
            node_id: entry.event.node_id.clone(),
            entry_hash: entry.hash.to_hex(),
            seal: entry.seal.to_hex(),
            leaf_index: entry.event.seq,
        }
    }
}

/// The entry's context as a JSON value (its canonical text parsed; the text itself in the
/// unreachable case that it does not parse).
fn context_value(entry: &SealedEntry) -> serde_json::Value {
    let text = entry.event.context.as_str();
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
}

/// One line of text summing the entry up, for `message` fields.
fn summary(entry: &SealedEntry) -> String {
    let e = &entry.event;
    format!(
        "{} {} {} {}:{}: {}",
        e.actor.kind, e.actor.id, e.action, e.target.kind, e.target.id, e.outcome
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use evident_core::event::{Actor, ActorKind, Context, Event, Outcome, Severity, Target};
    use evident_core::{Hash, SealKey};

    /// An entry with the given action, actor kind, outcome and severity and awkward values.
    pub(crate) fn entry(action: &str, outcome: Outcome, severity: Severity) -> SealedEntry {
        let context = Context::from_value(&serde_json::json!({
            "note": "a|b=c\\d\r\nnext ]\"",
            "n": 7
        }))
        .unwrap();
        let event = Event {
            seq: 41,
            id: uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
            recorded_at: 1_773_478_800_123,
            occurred_at: Some(1_773_478_799_000),
            node_id: "nyc-edge-01".to_owned(),
            tenant: "acme".to_owned(),
            actor: Actor {
                id: "alice|x=y\\z".to_owned(),
                kind: ActorKind::User,
                ip: Some("203.0.113.7".parse().unwrap()),
                user_agent: Some("curl/8 (x=1\ny)".to_owned()),
            },
            action: action.to_owned(),
            target: Target {
                kind: "node".to_owned(),
                id: "nyc|edge".to_owned(),
            },
            outcome,
            severity,
            context,
            appended_by: Some("evk_test".to_owned()),
        };
        let hash = Hash::digest(b"entry");
        let seal = SealKey::new(&[7u8; 32]).unwrap().seal(&hash);
        SealedEntry { event, hash, seal }
    }

    #[test]
    fn format_names_round_trip_and_unknown_names_are_named() {
        for f in SiemFormat::ALL {
            assert_eq!(f.to_string().parse::<SiemFormat>().unwrap(), f);
        }
        let e = "OCSF".parse::<SiemFormat>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown SIEM format \"OCSF\": expected ocsf, ecs or cef"
        );
        #[derive(serde::Deserialize)]
        struct Config {
            format: SiemFormat,
        }
        let e = toml::from_str::<Config>("format = \"leef\"").err().unwrap();
        assert!(
            e.to_string()
                .contains("unknown SIEM format \"leef\": expected ocsf, ecs or cef"),
            "{e}"
        );
        let ok: Config = toml::from_str("format = \"cef\"").unwrap();
        assert_eq!(ok.format, SiemFormat::Cef);
    }

    #[test]
    fn actions_fall_into_the_documented_classes() {
        for (action, class) in [
            ("auth.login", EventClass::Authentication),
            ("auth", EventClass::Authentication),
            ("evident.auth.unknown_key", EventClass::Authentication),
            ("authz.check", EventClass::ApiActivity),
            ("user.created", EventClass::AccountChange),
            ("key.rotated", EventClass::AccountChange),
            ("evident.key.created", EventClass::AccountChange),
            ("keyboard.pressed", EventClass::ApiActivity),
            ("evident.log.exported", EventClass::ApiActivity),
            ("config.threshold.changed", EventClass::ApiActivity),
        ] {
            assert_eq!(EventClass::of(action), class, "{action}");
        }
    }

    #[test]
    fn verbs_come_from_the_last_segments() {
        for (action, verb) in [
            ("auth.login", Verb::Login),
            ("auth.logout", Verb::Logout),
            ("user.created", Verb::Create),
            ("user.password.changed", Verb::PasswordChange),
            ("user.password_reset", Verb::PasswordReset),
            ("user.mfa.enabled", Verb::MfaEnable),
            ("evident.key.revoked", Verb::Disable),
            ("evident.log.exported", Verb::Read),
            ("config.threshold.changed", Verb::Update),
            ("doc.deleted", Verb::Delete),
            ("evident.auth.unknown_key", Verb::Other),
        ] {
            assert_eq!(Verb::of(action), verb, "{action}");
        }
    }

    #[test]
    fn every_format_renders_one_line_with_the_coordinates() {
        let entry = entry("auth.login", Outcome::Failure, Severity::Warning);
        let c = Coordinates::of(&entry);
        for f in SiemFormat::ALL {
            let line = render(f, &entry, "reporter-1");
            assert!(!line.contains('\n') && !line.contains('\r'), "{f}: {line}");
            assert!(line.contains(&c.entry_hash), "{f}: {line}");
            assert!(line.contains(&c.seal), "{f}: {line}");
            assert!(line.contains("nyc-edge-01"), "{f}: {line}");
        }
    }
}
