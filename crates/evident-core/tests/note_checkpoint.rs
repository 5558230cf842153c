//! Signed notes against the public vectors of the Go reference (golang.org/x/mod/sumdb/note:
//! the PeterNeumann and EnochRoot keys and signatures), multi-signature notes, and C2SP
//! checkpoints: strict parsing, signing and opening.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use evident_core::Hash;
use evident_core::checkpoint::{Checkpoint, CheckpointError};
use evident_core::note::{self, MAX_SIGNATURES, NoteError, NoteSigner, NoteVerifier, OpenedNote};
use proptest::prelude::*;

const PETER_SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n";
const PETER_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
const ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

fn peter() -> NoteVerifier {
    NoteVerifier::parse(PETER_VKEY).unwrap()
}

fn enoch() -> NoteVerifier {
    NoteVerifier::parse(ENOCH_VKEY).unwrap()
}

fn note_with(sigs: &[&str]) -> String {
    format!("{TEXT}\n{}", sigs.concat())
}

fn opened(verified_by: &[&str]) -> OpenedNote {
    OpenedNote {
        text: TEXT.to_owned(),
        verified_by: verified_by.iter().map(|s| s.to_string()).collect(),
    }
}

// ---- Keys ----

#[test]
fn reference_keys_round_trip() {
    let signer = NoteSigner::from_private_key_string(PETER_SKEY).unwrap();
    assert_eq!(signer.name(), "PeterNeumann");
    assert_eq!(signer.key_id(), 0xc74f20a3);
    assert_eq!(signer.to_private_key_string(), PETER_SKEY);
    assert_eq!(signer.verifier().to_vkey_string(), PETER_VKEY);
    assert_eq!(signer.verifier(), peter());

    let v = enoch();
    assert_eq!(v.name(), "EnochRoot");
    assert_eq!(v.key_id(), 0xaf0cfe78);
    assert_eq!(v.to_vkey_string(), ENOCH_VKEY);

    // The same seed under the private-key string and from_seed gives the same key.
    let seed: [u8; 32] = BASE64
        .decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")
        .unwrap()[1..]
        .try_into()
        .unwrap();
    let again = NoteSigner::from_seed("PeterNeumann", seed).unwrap();
    assert_eq!(again.to_private_key_string(), PETER_SKEY);
}

#[test]
fn mangled_verifier_keys_are_refused() {
    // Every proper substring and every single-byte change must fail, as in the Go tests.
    let b = PETER_VKEY.as_bytes();
    for i in 0..b.len() {
        for j in i + 1..=b.len() {
            if i == 0 && j == b.len() {
                continue;
            }
            let s = &PETER_VKEY[i..j];
            assert!(NoteVerifier::parse(s).is_err(), "accepted {s:?}");
        }
    }
    for i in 0..b.len() {
        let mut m = b.to_vec();
        m[i] = m[i].wrapping_add(1);
        if let Ok(s) = std::str::from_utf8(&m) {
            assert!(NoteVerifier::parse(s).is_err(), "accepted {s:?}");
        }
    }
    // Wrong key length and unknown algorithm, each with a key ID adjusted to match (Go vectors).
    assert!(
        NoteVerifier::parse(
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
        )
        .is_err()
    );
    assert!(
        NoteVerifier::parse("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
            .is_err()
    );
    // Upper-case key IDs are not the canonical form.
    assert!(
        NoteVerifier::parse("PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
            .is_err()
    );
    assert_eq!(
        NoteVerifier::parse("Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
        Err(NoteError::BadKeyName("Peter Neumann".into()))
    );
}

#[test]
fn mangled_private_keys_are_refused() {
    let b = PETER_SKEY.as_bytes();
    for i in 0..b.len() {
        for j in i + 1..=b.len() {
            if i == 0 && j == b.len() {
                continue;
            }
            let s = &PETER_SKEY[i..j];
            assert!(
                NoteSigner::from_private_key_string(s).is_err(),
                "accepted {s:?}"
            );
        }
    }
    for i in 0..b.len() {
        let mut m = b.to_vec();
        m[i] = m[i].wrapping_add(1);
        if let Ok(s) = std::str::from_utf8(&m) {
            assert!(
                NoteSigner::from_private_key_string(s).is_err(),
                "accepted {s:?}"
            );
        }
    }
}

#[test]
fn key_id_follows_c2sp() {
    // key ID = SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[:4], computed here independently.
    let v = peter();
    let raw = BASE64
        .decode(PETER_VKEY.rsplit('+').next().unwrap())
        .unwrap();
    assert_eq!(raw[0], 0x01);
    let mut input = b"PeterNeumann\n".to_vec();
    input.extend_from_slice(&raw);
    let digest = Hash::digest(&input);
    let want = u32::from_be_bytes(digest.0[..4].try_into().unwrap());
    assert_eq!(v.key_id(), want);
    assert_eq!(want, 0xc74f20a3);
}

// ---- Signing and opening ----

#[test]
fn signs_the_reference_note_byte_for_byte() {
    let signer = NoteSigner::from_private_key_string(PETER_SKEY).unwrap();
    assert_eq!(signer.sign(TEXT).unwrap(), note_with(&[PETER_SIG]));
    assert!(matches!(signer.sign("abc"), Err(NoteError::Malformed(_))));
}

#[test]
fn opens_the_reference_note() {
    assert_eq!(
        note::open(&note_with(&[PETER_SIG]), &[peter()]),
        Ok(opened(&["PeterNeumann"]))
    );
    assert_eq!(
        note::open(&note_with(&[PETER_SIG]), &[]),
        Err(NoteError::UnverifiedNote)
    );
    assert_eq!(
        note::open(&note_with(&[PETER_SIG]), &[enoch()]),
        Err(NoteError::UnverifiedNote)
    );
}

#[test]
fn multi_signature_notes() {
    let both = note_with(&[PETER_SIG, ENOCH_SIG]);
    // One known key, one unknown: the unknown signature is ignored.
    assert_eq!(note::open(&both, &[peter()]), Ok(opened(&["PeterNeumann"])));
    assert_eq!(note::open(&both, &[enoch()]), Ok(opened(&["EnochRoot"])));
    // Two known keys: both reported, in note order.
    assert_eq!(
        note::open(&both, &[enoch(), peter()]),
        Ok(opened(&["PeterNeumann", "EnochRoot"]))
    );
    // No known key.
    assert_eq!(note::open(&both, &[]), Err(NoteError::UnverifiedNote));
    // Repeated lines are harmless and reported once.
    let repeated = note_with(&[PETER_SIG, PETER_SIG, ENOCH_SIG, ENOCH_SIG]);
    assert_eq!(
        note::open(&repeated, &[peter()]),
        Ok(opened(&["PeterNeumann"]))
    );
}

#[test]
fn a_known_key_that_does_not_verify_rejects_the_note() {
    // Go's vector: four base64 characters spliced into the signature.
    let bad_peter = format!("{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]);
    let bad_enoch = format!("{}ABCD{}", &ENOCH_SIG[..60], &ENOCH_SIG[60..]);
    let bad = NoteError::BadSignature {
        name: "PeterNeumann".into(),
    };
    assert_eq!(
        note::open(&note_with(&[&bad_peter]), &[peter()]),
        Err(bad.clone())
    );
    // Even when another known key did verify.
    assert_eq!(
        note::open(&note_with(&[ENOCH_SIG, &bad_peter]), &[peter(), enoch()]),
        Err(bad.clone())
    );
    // A bad signature by an unknown key is ignored.
    assert_eq!(
        note::open(&note_with(&[PETER_SIG, &bad_enoch]), &[peter()]),
        Ok(opened(&["PeterNeumann"]))
    );
    // Changed text: the signature no longer verifies.
    let altered = note_with(&[PETER_SIG]).replacen("problem", "question", 1);
    assert_eq!(note::open(&altered, &[peter()]), Err(bad));
}

#[test]
fn same_name_or_same_id_is_not_the_same_key() {
    // A signature under the known name but another key ID is an unknown key: ignored.
    let id_bytes = 0xc74f20a4u32.to_be_bytes();
    let mut sig = BASE64
        .decode(PETER_SIG.trim_end().rsplit(' ').next().unwrap())
        .unwrap();
    sig[..4].copy_from_slice(&id_bytes);
    let other_id = format!("\u{2014} PeterNeumann {}\n", BASE64.encode(&sig));
    assert_eq!(
        note::open(&note_with(&[&other_id]), &[peter()]),
        Err(NoteError::UnverifiedNote)
    );
    // The known key ID under another name: also unknown.
    let other_name = PETER_SIG.replace("PeterNeumann", "PeterNeuman");
    assert_eq!(
        note::open(&note_with(&[&other_name]), &[peter()]),
        Err(NoteError::UnverifiedNote)
    );
}

#[test]
fn malformed_notes_are_refused() {
    let too_many = note_with(&[PETER_SIG; MAX_SIGNATURES + 1]);
    let at_limit = note_with(&[PETER_SIG; MAX_SIGNATURES]);
    assert_eq!(
        note::open(&at_limit, &[peter()]),
        Ok(opened(&["PeterNeumann"]))
    );
    let bad: Vec<String> = vec![
        TEXT.to_owned(),
        format!("{TEXT}\n"),
        format!("{TEXT}\n{}", &PETER_SIG[..PETER_SIG.len() - 1]),
        format!("\x01{TEXT}\n{PETER_SIG}"),
        format!("{TEXT}\n{}", PETER_SIG.replace('\n', "\r\n")),
        format!(
            "{TEXT}\n\u{2014} Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
        ),
        format!("{TEXT}\n{PETER_SIG}Unexpected line.\n"),
        format!("{TEXT}\n{PETER_SIG}\n"),
        format!(
            "{TEXT}\n- PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
        ),
        format!("{TEXT}\n\u{2014} PeterNeumann x08g\n"),
        format!(
            "{TEXT}\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM\n"
        ),
        too_many,
    ];
    for msg in bad {
        assert!(
            matches!(note::open(&msg, &[peter()]), Err(NoteError::Malformed(_))),
            "accepted or misjudged {msg:?}"
        );
    }
}

#[test]
fn cosigning() {
    let log = NoteSigner::from_private_key_string(PETER_SKEY).unwrap();
    let witness = NoteSigner::from_seed("witness.example/w1", [42; 32]).unwrap();
    let signed = log.sign(TEXT).unwrap();
    let cosigned = note::add_signature(&signed, &witness).unwrap();
    assert!(
        cosigned.starts_with(&signed),
        "existing signature lines are kept"
    );
    assert_eq!(
        cosigned
            .lines()
            .filter(|l| l.starts_with('\u{2014}'))
            .count(),
        2
    );
    assert_eq!(
        note::open(&cosigned, &[peter(), witness.verifier()]),
        Ok(opened(&["PeterNeumann", "witness.example/w1"]))
    );
    assert_eq!(
        note::open(&cosigned, &[peter()]),
        Ok(opened(&["PeterNeumann"]))
    );
    assert_eq!(
        note::open(&cosigned, &[witness.verifier()]),
        Ok(opened(&["witness.example/w1"]))
    );
    // Cosigning again with the same key replaces its signature rather than adding one.
    let again = note::add_signature(&cosigned, &witness).unwrap();
    assert_eq!(
        again, cosigned,
        "Ed25519 is deterministic, so the note is unchanged"
    );
    // Cosigning keeps unknown signatures and refuses malformed notes and full notes.
    let with_enoch = note::add_signature(&note_with(&[ENOCH_SIG]), &log).unwrap();
    assert_eq!(with_enoch, note_with(&[ENOCH_SIG, PETER_SIG]));
    assert!(matches!(
        note::add_signature(TEXT, &witness),
        Err(NoteError::Malformed(_))
    ));
    let full = note_with(&[ENOCH_SIG; MAX_SIGNATURES]);
    assert!(matches!(
        note::add_signature(&full, &witness),
        Err(NoteError::Malformed(_))
    ));
}

// ---- Checkpoints ----

/// The example body from the C2SP tlog-checkpoint specification.
const SPEC_BODY: &str =
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";

fn log_signer() -> NoteSigner {
    NoteSigner::from_seed("evident.example/log", [9; 32]).unwrap()
}

fn checkpoint(size: u64) -> Checkpoint {
    Checkpoint {
        origin: "evident.example/log".into(),
        size,
        root: Hash::digest(&size.to_be_bytes()),
        extensions: vec![],
    }
}

#[test]
fn parses_the_spec_example() {
    let cp = Checkpoint::parse(SPEC_BODY).unwrap();
    assert_eq!(cp.origin, "example.com/behind-the-sofa");
    assert_eq!(cp.size, 20852163);
    assert_eq!(
        BASE64.encode(cp.root.as_bytes()),
        "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
    );
    assert!(cp.extensions.is_empty());
    assert_eq!(cp.to_text(), SPEC_BODY);
}

#[test]
fn extensions_round_trip() {
    let mut cp = checkpoint(7);
    cp.extensions = vec!["ext one".into(), "— two".into()];
    let text = cp.to_text();
    assert!(text.ends_with("\next one\n— two\n"));
    assert_eq!(Checkpoint::parse(&text), Ok(cp));
}

#[test]
fn sizes_parse_strictly() {
    let root = "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=";
    let body = |size: &str| format!("log\n{size}\n{root}\n");
    assert_eq!(Checkpoint::parse(&body("0")).unwrap().size, 0);
    assert_eq!(
        Checkpoint::parse(&body("18446744073709551615"))
            .unwrap()
            .size,
        u64::MAX
    );
    for bad in [
        "",
        "00",
        "01",
        "+1",
        "-1",
        " 1",
        "1 ",
        "1_000",
        "0x10",
        "18446744073709551616",
        "１",
    ] {
        assert!(
            matches!(
                Checkpoint::parse(&body(bad)),
                Err(CheckpointError::Malformed(_))
            ),
            "accepted size {bad:?}"
        );
    }
}

#[test]
fn roots_parse_strictly() {
    let body = |root: &str| format!("log\n5\n{root}\n");
    assert!(Checkpoint::parse(&body("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")).is_ok());
    for bad in [
        "",
        "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I", // no padding
        "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2J=", // non-zero trailing bits
        "CsUYapGGPo4dkMgIAUqom_Xajj7h2fB2MPA3j2jxq2I=", // URL alphabet
        "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxqw==", // 31 bytes
        "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2IA", // 33 bytes
        " CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=",
        "0ac5186a91863e8e1d90c808014aa89bf5da8e3ee1d9f07630f0378f68f1ab62", // hex
    ] {
        assert!(
            matches!(
                Checkpoint::parse(&body(bad)),
                Err(CheckpointError::Malformed(_))
            ),
            "accepted root {bad:?}"
        );
    }
}

#[test]
fn bodies_parse_strictly() {
    let root = "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=";
    for bad in [
        format!("log\n5\n{root}"),     // no final newline
        "log\n5\n".to_owned(),         // no root line
        format!("\n5\n{root}\n"),      // empty origin
        format!("a log\n5\n{root}\n"), // space in origin
        format!(" log\n5\n{root}\n"),
        format!("log \n5\n{root}\n"),
        format!("lo+g\n5\n{root}\n"),
        format!("log\r\n5\n{root}\n"),
        format!("log\n5\n{root}\n\n"), // empty extension line
        format!("log\n5\n{root}\next\n\n"),
        format!("log\n5\n{root}\nex\tt\n"), // control character
        String::new(),
    ] {
        assert!(
            matches!(Checkpoint::parse(&bad), Err(CheckpointError::Malformed(_))),
            "accepted {bad:?}"
        );
    }
}

#[test]
fn sign_and_open() {
    let signer = log_signer();
    let cp = checkpoint(42);
    let signed = cp.sign(&signer).unwrap();
    assert!(signed.starts_with(&cp.to_text()));
    assert_eq!(
        Checkpoint::open(&signed, &signer.verifier()),
        Ok(cp.clone())
    );

    // Another key of the same name is unknown to the verifier.
    let impostor = NoteSigner::from_seed("evident.example/log", [10; 32]).unwrap();
    assert_eq!(
        Checkpoint::open(&signed, &impostor.verifier()),
        Err(CheckpointError::Note(NoteError::UnverifiedNote))
    );
    // A changed size breaks the signature.
    let forged = signed.replacen("\n42\n", "\n43\n", 1);
    assert_eq!(
        Checkpoint::open(&forged, &signer.verifier()),
        Err(CheckpointError::Note(NoteError::BadSignature {
            name: "evident.example/log".into()
        }))
    );
    // A witness cosignature does not get in the way.
    let witness = NoteSigner::from_seed("witness.example", [11; 32]).unwrap();
    let cosigned = note::add_signature(&signed, &witness).unwrap();
    assert_eq!(
        Checkpoint::open(&cosigned, &signer.verifier()),
        Ok(cp.clone())
    );
    // But the witness key alone is not the log's key.
    assert_eq!(
        Checkpoint::open(&cosigned, &witness.verifier()),
        Err(CheckpointError::OriginMismatch {
            origin: "evident.example/log".into(),
            key_name: "witness.example".into()
        })
    );
}

#[test]
fn signer_and_verifier_must_be_the_origin() {
    let other = NoteSigner::from_seed("other.example", [12; 32]).unwrap();
    let cp = checkpoint(3);
    assert_eq!(
        cp.sign(&other),
        Err(CheckpointError::OriginMismatch {
            origin: "evident.example/log".into(),
            key_name: "other.example".into()
        })
    );
    // A note over a valid checkpoint body, signed by a key named otherwise, does not open.
    let signed = other.sign(&cp.to_text()).unwrap();
    assert_eq!(
        Checkpoint::open(&signed, &other.verifier()),
        Err(CheckpointError::OriginMismatch {
            origin: "evident.example/log".into(),
            key_name: "other.example".into()
        })
    );
    // A well-signed note that is not a checkpoint.
    let log = log_signer();
    let not_cp = log.sign("evident.example/log\nnot a size\n").unwrap();
    assert!(matches!(
        Checkpoint::open(&not_cp, &log.verifier()),
        Err(CheckpointError::Malformed(_))
    ));
}

#[test]
fn unsignable_checkpoints_are_refused() {
    let signer = log_signer();
    for ext in ["", "two\nlines", "tab\t"] {
        let mut cp = checkpoint(1);
        cp.extensions = vec![ext.into()];
        assert!(
            matches!(cp.sign(&signer), Err(CheckpointError::Malformed(_))),
            "signed extension {ext:?}"
        );
    }
}

proptest! {
    #[test]
    fn checkpoints_round_trip(
        size in any::<u64>(),
        root in any::<[u8; 32]>(),
        extensions in proptest::collection::vec("[a-z0-9 ./=+—-]{1,20}", 0..3),
    ) {
        let cp = Checkpoint {
            origin: "evident.example/log".into(),
            size,
            root: Hash(root),
            extensions,
        };
        prop_assert_eq!(Checkpoint::parse(&cp.to_text()), Ok(cp.clone()));
        let signer = log_signer();
        let signed = cp.sign(&signer).unwrap();
        prop_assert_eq!(Checkpoint::open(&signed, &signer.verifier()), Ok(cp));
    }
}
