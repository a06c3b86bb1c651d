//! Replays the `decode` fuzz target's corpus (fuzz/corpus/decode) and every
//! crash it saved (fuzz/artifacts/decode, when present) as an ordinary test,
//! with the checks of fuzz/fuzz_targets/decode.rs: decoding never panics, an
//! accepted frame passes `validate`, and re-encoding it gives back exactly
//! the input (the decoder accepts only shortest varints), which decodes to
//! the same frame. See fuzz/README.md.

use cerebellum_firmware_bridge::protocol::{self, Frame};
use std::path::{Path, PathBuf};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/decode");
const ARTIFACTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/artifacts/decode");

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// The decode target's checks; returns whether the bytes decoded.
fn check(path: &Path, data: &[u8]) -> bool {
    let Ok(frame) = protocol::decode(data) else {
        return false;
    };
    let name = path.display();
    assert!(frame.validate().is_ok(), "{name}: decoded an invalid frame");
    let bytes = protocol::encode_to_vec(&frame);
    // Only the shortest varints decode, so a frame has one encoding.
    assert_eq!(
        bytes, data,
        "{name}: re-encoded frame differs from the input"
    );
    assert_eq!(
        protocol::encoded_len(&frame),
        bytes.len(),
        "{name}: encoded_len"
    );
    let again: Frame = protocol::decode(&bytes)
        .unwrap_or_else(|e| panic!("{name}: re-encoded frame does not decode: {e:?}"));
    assert_eq!(
        again, frame,
        "{name}: re-encoded frame decodes to another frame"
    );
    assert_eq!(
        protocol::encode_to_vec(&again),
        bytes,
        "{name}: encode is not a fixed point"
    );
    // Into an exact fixed buffer, as firmware does: the same bytes.
    let mut buffer = vec![0u8; bytes.len()];
    assert_eq!(
        protocol::encode(&frame, &mut buffer).expect("fits its exact size"),
        &bytes[..],
        "{name}: encode and encode_to_vec differ"
    );
    true
}

#[test]
fn the_fuzz_corpus_and_every_saved_crash_pass_the_decode_checks() {
    let corpus = files(Path::new(CORPUS));
    assert!(!corpus.is_empty(), "no fuzz corpus in {CORPUS}");
    let artifacts = files(Path::new(ARTIFACTS));
    let mut decoded = 0;
    for path in corpus.iter().chain(&artifacts) {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if check(path, &data) {
            decoded += 1;
        }
    }
    // The seeds (fuzz/gen_seeds.py) are valid frames of every body kind.
    assert!(decoded > 0, "no file of the corpus decodes");
}
