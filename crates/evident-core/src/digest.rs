//! The per-period signed digest of a published bucket (the objects of one period with their
//! SHA-256 and size, the checkpoint at the period's end, the previous digest's SHA-256: a
//! chain, verifiable offline), and the bucket's object layout ([`layout`]), in one place.
//!
//! A digest is a C2SP signed note by the node's checkpoint key (`docs/FORMAT.md`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::checkpoint::Checkpoint;
use crate::event::{Millis, format_rfc3339_millis, parse_rfc3339};
use crate::hash::Hash;
use crate::note::{self, NoteError, NoteSigner, NoteVerifier};

/// The first line of every digest.
pub const DIGEST_FORMAT: &str = "evident-digest/v1";

/// The object keys of a published log, relative to its prefix.
pub mod layout {
    use crate::event::{Millis, format_rfc3339_millis};

    /// The C2SP checkpoint object: the only object ever replaced.
    pub const CHECKPOINT: &str = "checkpoint";
    /// Where the hash tiles and entry bundles live (`crate::tiles::TileId::path`).
    pub const TILES_PREFIX: &str = "tile/";
    /// Where the per-period NDJSON bundles and CSVs live.
    pub const BUNDLES_PREFIX: &str = "bundles/";
    /// Where the per-period digests live.
    pub const DIGESTS_PREFIX: &str = "digests/";

    const DAY_MS: Millis = 86_400_000;

    /// The name of the period starting at `start` (ms since the epoch, UTC): `2026-12-02` for
    /// a period starting at midnight, `2026-12-02T13-00-00Z` otherwise (periods shorter than
    /// a day). Names sort in time order.
    pub fn period_name(start: Millis) -> String {
        let text = format_rfc3339_millis(start);
        let date = text.get(..10).unwrap_or(&text).to_owned();
        if start.rem_euclid(DAY_MS) == 0 {
            return date;
        }
        let time = text.get(11..19).unwrap_or_default().replace(':', "-");
        format!("{date}T{time}Z")
    }

    /// The keys of one period's objects.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct PeriodKeys {
        /// The self-verifying NDJSON export of the period's entries.
        pub bundle: String,
        /// The same entries as CSV, for auditors.
        pub csv: String,
        /// The signed digest naming both.
        pub digest: String,
    }

    pub fn period_keys(start: Millis) -> PeriodKeys {
        let name = period_name(start);
        PeriodKeys {
            bundle: format!("{BUNDLES_PREFIX}{name}.ndjson"),
            csv: format!("{BUNDLES_PREFIX}{name}.csv"),
            digest: format!("{DIGESTS_PREFIX}{name}.digest"),
        }
    }
}

/// One object a digest names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestObject {
    pub key: String,
    pub sha256: Hash,
    pub size: u64,
}

impl DigestObject {
    /// The entry for an object's bytes.
    pub fn of(key: &str, bytes: &[u8]) -> DigestObject {
        DigestObject {
            key: key.to_owned(),
            sha256: Hash::digest(bytes),
            size: bytes.len() as u64,
        }
    }
}

/// The digest of one period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// The log's origin (its key name).
    pub origin: String,
    /// The period `[period_start, period_end)`, ms since the epoch.
    pub period_start: Millis,
    pub period_end: Millis,
    /// The period's entries: seqs `[from_seq, to_seq)`.
    pub from_seq: u64,
    pub to_seq: u64,
    /// The checkpoint the period's bundle is tied to (size `to_seq`).
    pub checkpoint_size: u64,
    pub checkpoint_root: Hash,
    /// The period's objects (the NDJSON bundle, the CSV).
    pub objects: Vec<DigestObject>,
    /// The previous period's digest: its key and the SHA-256 of its bytes (`None` for the
    /// first period of the bucket).
    pub previous: Option<(String, Hash)>,
}

/// Errors from parsing, signing or opening a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("malformed digest: {0}")]
    Malformed(String),
    #[error("digest signature: {0}")]
    Note(#[from] NoteError),
    #[error("digest origin {origin:?} does not match key name {key_name:?}")]
    OriginMismatch { origin: String, key_name: String },
}

fn malformed(why: impl Into<String>) -> DigestError {
    DigestError::Malformed(why.into())
}

fn parse_u64(s: &str, what: &str) -> Result<u64, DigestError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return Err(malformed(format!("{what} is not a decimal number")));
    }
    s.parse()
        .map_err(|_| malformed(format!("{what} does not fit in 64 bits")))
}

fn parse_time(s: &str, what: &str) -> Result<Millis, DigestError> {
    let ms = parse_rfc3339(s).map_err(|_| malformed(format!("{what} is not a timestamp")))?;
    if format_rfc3339_millis(ms) != s {
        return Err(malformed(format!("{what} is not in canonical form")));
    }
    Ok(ms)
}

fn parse_hex(s: &str, what: &str) -> Result<Hash, DigestError> {
    Hash::from_hex(s).map_err(|_| malformed(format!("{what} is not 64 lowercase hex digits")))
}

fn valid_key(key: &str) -> bool {
    !key.is_empty() && !key.bytes().any(|b| b <= b' ') && !key.starts_with('/')
}

impl Digest {
    /// A digest for `checkpoint` and the objects' bytes.
    pub fn new(
        checkpoint: &Checkpoint,
        period: (Millis, Millis),
        seqs: (u64, u64),
        objects: &[(&str, &[u8])],
        previous: Option<(&str, Hash)>,
    ) -> Digest {
        Digest {
            origin: checkpoint.origin.clone(),
            period_start: period.0,
            period_end: period.1,
            from_seq: seqs.0,
            to_seq: seqs.1,
            checkpoint_size: checkpoint.size,
            checkpoint_root: checkpoint.root,
            objects: objects
                .iter()
                .map(|(key, bytes)| DigestObject::of(key, bytes))
                .collect(),
            previous: previous.map(|(key, hash)| (key.to_owned(), hash)),
        }
    }

    /// The note text (ending in a newline).
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "{DIGEST_FORMAT}\n{}\nperiod {} {}\nseqs {} {}\ncheckpoint {} {}\n",
            self.origin,
            format_rfc3339_millis(self.period_start),
            format_rfc3339_millis(self.period_end),
            self.from_seq,
            self.to_seq,
            self.checkpoint_size,
            BASE64.encode(self.checkpoint_root.as_bytes()),
        );
        for object in &self.objects {
            text.push_str(&format!(
                "object {} {} {}\n",
                object.sha256, object.size, object.key
            ));
        }
        if let Some((key, hash)) = &self.previous {
            text.push_str(&format!("previous {hash} {key}\n"));
        }
        text
    }

    /// Parses a digest's note text (one text form only).
    pub fn parse(text: &str) -> Result<Digest, DigestError> {
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| malformed("text must end with a newline"))?;
        let mut lines = body.split('\n');
        if lines.next() != Some(DIGEST_FORMAT) {
            return Err(malformed(format!("first line must be {DIGEST_FORMAT}")));
        }
        let origin = lines.next().unwrap_or_default();
        if !note::is_valid_key_name(origin) {
            return Err(malformed("origin must be non-empty, without spaces or '+'"));
        }
        let mut field = |name: &str, parts: usize| -> Result<Vec<String>, DigestError> {
            let line = lines
                .next()
                .ok_or_else(|| malformed(format!("missing {name} line")))?;
            let rest = line
                .strip_prefix(name)
                .and_then(|r| r.strip_prefix(' '))
                .ok_or_else(|| malformed(format!("expected the {name} line")))?;
            let values: Vec<String> = rest.split(' ').map(str::to_owned).collect();
            if values.len() != parts {
                return Err(malformed(format!("{name} line needs {parts} values")));
            }
            Ok(values)
        };
        let period = field("period", 2)?;
        let seqs = field("seqs", 2)?;
        let checkpoint = field("checkpoint", 2)?;
        let root_bytes = BASE64
            .decode(&checkpoint[1])
            .map_err(|_| malformed("checkpoint root is not base64"))?;
        let root: [u8; 32] = root_bytes
            .try_into()
            .map_err(|_| malformed("checkpoint root is not 32 bytes"))?;
        if BASE64.encode(root) != checkpoint[1] {
            return Err(malformed("checkpoint root is not canonical base64"));
        }
        let mut digest = Digest {
            origin: origin.to_owned(),
            period_start: parse_time(&period[0], "period start")?,
            period_end: parse_time(&period[1], "period end")?,
            from_seq: parse_u64(&seqs[0], "first seq")?,
            to_seq: parse_u64(&seqs[1], "end seq")?,
            checkpoint_size: parse_u64(&checkpoint[0], "checkpoint size")?,
            checkpoint_root: Hash(root),
            objects: Vec::new(),
            previous: None,
        };
        for line in lines {
            if digest.previous.is_some() {
                return Err(malformed("nothing may follow the previous line"));
            }
            let parts: Vec<&str> = line.split(' ').collect();
            match parts.as_slice() {
                ["object", sha, size, key] if valid_key(key) => {
                    digest.objects.push(DigestObject {
                        key: (*key).to_owned(),
                        sha256: parse_hex(sha, "object SHA-256")?,
                        size: parse_u64(size, "object size")?,
                    });
                }
                ["previous", sha, key] if valid_key(key) => {
                    digest.previous =
                        Some(((*key).to_owned(), parse_hex(sha, "previous SHA-256")?));
                }
                _ => return Err(malformed(format!("unexpected line {line:?}"))),
            }
        }
        if digest.period_end <= digest.period_start {
            return Err(malformed("period must end after it starts"));
        }
        if digest.to_seq < digest.from_seq || digest.checkpoint_size < digest.to_seq {
            return Err(malformed("needs first seq <= end seq <= checkpoint size"));
        }
        if digest.to_text() != text {
            return Err(malformed("not in canonical form"));
        }
        Ok(digest)
    }

    /// The signed digest object (a C2SP signed note); the signer's name must be the origin.
    pub fn sign(&self, signer: &NoteSigner) -> Result<String, DigestError> {
        if signer.name() != self.origin {
            return Err(DigestError::OriginMismatch {
                origin: self.origin.clone(),
                key_name: signer.name().to_owned(),
            });
        }
        let text = self.to_text();
        if Digest::parse(&text).as_ref() != Ok(self) {
            return Err(malformed("digest does not round-trip through its text"));
        }
        Ok(signer.sign(&text)?)
    }

    /// Verifies a signed digest against `verifier` (whose name must be the origin) and parses it.
    pub fn open(signed: &str, verifier: &NoteVerifier) -> Result<Digest, DigestError> {
        let opened = note::open(signed, std::slice::from_ref(verifier))?;
        let digest = Digest::parse(&opened.text)?;
        if digest.origin != verifier.name() {
            return Err(DigestError::OriginMismatch {
                origin: digest.origin,
                key_name: verifier.name().to_owned(),
            });
        }
        Ok(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn signer() -> NoteSigner {
        NoteSigner::from_seed("log.example", [7u8; 32]).unwrap()
    }

    pub(super) fn sample() -> Digest {
        let checkpoint = Checkpoint {
            origin: "log.example".into(),
            size: 10,
            root: Hash::digest(b"root"),
            extensions: vec![],
        };
        Digest::new(
            &checkpoint,
            (1_764_633_600_000, 1_764_720_000_000),
            (4, 10),
            &[
                ("bundles/2025-12-02.ndjson", b"{}\n"),
                ("bundles/2025-12-02.csv", b"a,b\n"),
            ],
            Some(("digests/2025-12-01.digest", Hash::digest(b"prev"))),
        )
    }

    #[test]
    fn digest_round_trips_and_is_signed() {
        let digest = sample();
        let text = digest.to_text();
        assert!(text.starts_with(
            "evident-digest/v1\nlog.example\nperiod 2025-12-02T00:00:00.000Z 2025-12-03T00:00:00.000Z\nseqs 4 10\ncheckpoint 10 "
        ));
        assert_eq!(Digest::parse(&text), Ok(digest.clone()));
        let signed = digest.sign(&signer()).unwrap();
        assert_eq!(Digest::open(&signed, &signer().verifier()), Ok(digest));
        let forged = signed.replace("seqs 4 10", "seqs 5 10");
        assert!(Digest::open(&forged, &signer().verifier()).is_err());
        let other = NoteSigner::from_seed("log.example", [8u8; 32]).unwrap();
        assert!(Digest::open(&signed, &other.verifier()).is_err());
    }

    #[test]
    fn non_canonical_digests_are_refused() {
        let text = sample().to_text();
        for bad in [
            text.replace("seqs 4 10", "seqs 04 10"),
            text.replace("seqs 4 10", "seqs 11 10"),
            text.replace("object ", "object  "),
            text.replace("previous", "prev"),
            text.replace("2025-12-02T00:00:00.000Z", "2025-12-02T00:00:00Z"),
            text.trim_end().to_owned(),
            format!("{text}object {} 1 x\n", Hash::ZERO),
        ] {
            assert!(Digest::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn period_names() {
        assert_eq!(layout::period_name(1_764_633_600_000), "2025-12-02");
        assert_eq!(
            layout::period_name(1_764_633_600_000 + 3_600_000 + 10_000),
            "2025-12-02T01-00-10Z"
        );
        let keys = layout::period_keys(1_764_633_600_000);
        assert_eq!(keys.bundle, "bundles/2025-12-02.ndjson");
        assert_eq!(keys.csv, "bundles/2025-12-02.csv");
        assert_eq!(keys.digest, "digests/2025-12-02.digest");
    }
}
#[cfg(test)]
mod example {
    /// The worked example of docs/FORMAT.md §15, byte for byte (Ed25519 is deterministic).
    #[test]
    fn the_documented_example() {
        let signed = super::tests::sample()
            .sign(&super::tests::signer())
            .unwrap();
        assert_eq!(signed, EXAMPLE);
    }

    const EXAMPLE: &str = "evident-digest/v1
log.example
period 2025-12-02T00:00:00.000Z 2025-12-03T00:00:00.000Z
seqs 4 10
checkpoint 10 SBNJTRN+FjG7owHVrKtue7eqdM4RhdRWVl71HXN2d7I=
object ca3d163bab055381827226140568f3bef7eaac187cebd76878e0b63e9e442356 3 bundles/2025-12-02.ndjson
object 5be08c9684a1d25efcee09318204824278b08bbfb4aef973ffefd0b9d7478313 4 bundles/2025-12-02.csv
previous 84fd9bac333ad79154348296204fa7f8c537a96e08983e5f73b3f5aca8e8edf7 digests/2025-12-01.digest

\u{2014} log.example iRusLb/4oDWa9B00vzvB5vMJUxKQofD1ybWWG3pRHNH0A+GB+zKiCknCeXERbgxbfYNJccHZwXYPpqxLPXmcAxcZbAc=
";
}
