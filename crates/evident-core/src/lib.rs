//! Evident's integrity core.
//!
//! Everything that decides whether an audit log is intact lives here, and nothing else does:
//! the event model and its validation, the canonical encoding, the hash chain and HMAC seal,
//! the RFC 6962 Merkle tree with its proofs, C2SP signed checkpoints, the export bundle format,
//! the streaming verifier, the four-eyes pairing with its signed report bundle, and a published
//! bucket's C2SP tiles and digest chain. Bytes and values in, values and typed errors out: this
//! crate performs no I/O, spawns no threads, reads no clock and draws no randomness. Storage, the
//! HTTP server and the CLI call into it; they never re-implement any of it.
//!
//! The byte-exact format is specified in `docs/FORMAT.md`.

pub mod canonical;
pub mod chain;
pub mod checkpoint;
pub mod cosignature;
pub mod digest;
pub mod event;
pub mod export;
pub mod filter;
pub mod four_eyes;
pub mod hash;
pub mod json;
pub mod merkle;
pub mod note;
pub mod tiles;
pub mod verify;

pub use chain::{ChainHead, SealKey, SealedEntry};
pub use checkpoint::Checkpoint;
pub use event::{Actor, ActorKind, Event, EventInput, Outcome, Severity, Target};
pub use hash::Hash;
pub use merkle::CompactRange;
pub use note::{NoteSigner, NoteVerifier};
pub use verify::{StreamVerifier, Violation};
