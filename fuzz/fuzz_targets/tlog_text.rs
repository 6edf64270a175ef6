//! Transparency-log text that `verify-receipt`, witnesses and `log` commands read from
//! files and from the server: signed notes (C2SP signed-note), checkpoints
//! (tlog-checkpoint), tlog-proofs, verifier keys and cosignature lines. No input may
//! panic, and every accepted text has one spelling: re-encoding what was parsed gives
//! back the input byte for byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidemark::tlog::{
    checkpoint::Checkpoint,
    cosignature::{self, WitnessKey},
    note::{self, NoteSigner, NoteVerifier},
    proof::TlogProof,
};

fn signer() -> NoteSigner {
    NoteSigner::from_seed("fuzz.example/log", [7; 32]).expect("a valid name")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let signer = signer();
    let verifier = signer.verifier();
    match mode % 4 {
        // Any signed note, as a server or a file would hand it over.
        0 => {
            let _ = note::open(text, std::slice::from_ref(&verifier));
            let _ = Checkpoint::open(text, &verifier);
            let witness = WitnessKey::new("witness.example", [9; 32]);
            let _ = cosignature::cosigned_by(text, &verifier, std::slice::from_ref(&witness));
        }
        // A checkpoint body, correctly signed: the signature must not be what stops it.
        1 => {
            if let Ok(signed) = signer.sign(text) {
                let opened = note::open(&signed, std::slice::from_ref(&verifier))
                    .expect("a note this signer signed opens");
                assert_eq!(opened.text, text);
                if let Ok(checkpoint) = Checkpoint::open(&signed, &verifier) {
                    assert_eq!(checkpoint.to_body(), text, "one spelling of a checkpoint");
                }
            }
        }
        // A tlog-proof (a receipt file).
        2 => {
            if let Ok(proof) = TlogProof::parse(text) {
                assert_eq!(proof.encode(), text, "one spelling of a tlog-proof");
                let _ = proof.verify(b"entry", &verifier);
            }
            let _ = tidemark::receipt::verify_log_proof(text, &verifier.verifier_key());
        }
        // Keys and signature lines.
        _ => {
            if let Ok(key) = NoteVerifier::parse(text) {
                assert_eq!(key.verifier_key(), text, "one spelling of a verifier key");
            }
            if let Ok(key) = WitnessKey::parse(text) {
                assert_eq!(
                    key.verifier_key(),
                    text.trim(),
                    "one spelling of a witness key"
                );
            }
            if let Ok(key) = NoteSigner::parse_private_key(text) {
                assert_eq!(key.private_key(), text, "one spelling of a signer key");
            }
            let _ = note::parse_signature(text);
            let _ = cosignature::time_of(text);
        }
    }
});
