//! The fuzz targets' bodies on stable: random byte strings (proptest, a few
//! thousand per target; `PROPTEST_CASES` overrides) and every input checked
//! in under `fuzz/regressions/<target>/` (crashes the fuzzers found, kept
//! as regression tests).

use std::path::PathBuf;

use proptest::prelude::*;
use tasklane_fuzz::{lane_inputs, result_intake, spool_codec, task_decode, TARGETS};

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn config(default: u32) -> ProptestConfig {
    ProptestConfig { cases: cases(default), max_shrink_iters: 4_000, ..ProptestConfig::default() }
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

proptest! {
    #![proptest_config(config(4_000))]

    #[test]
    fn task_decode_on_random_bytes(data in bytes(512)) {
        task_decode::run(&data);
    }

    #[test]
    fn result_intake_on_random_bytes(data in bytes(2048)) {
        result_intake::run(&data);
    }

    #[test]
    fn spool_codec_on_random_bytes(data in bytes(512)) {
        spool_codec::run(&data);
    }
}

proptest! {
    #![proptest_config(config(2_000))]

    #[test]
    fn lane_inputs_on_random_bytes(data in bytes(4096)) {
        lane_inputs::run(&data);
    }
}

/// The random byte strings are not vacuous: over a fixed set of them the
/// lane target gets through the session set-up and reaches every kind of
/// traffic and fault the auditor judges.
#[test]
fn lane_inputs_reach_deep_states() {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut depth = lane_inputs::Depth::default();
    for _ in 0..300 {
        let len = (next() % 4096) as usize;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        depth.merge(lane_inputs::run_for_depth(&data));
    }
    eprintln!("{depth:?}");
    let d = depth;
    for (what, n) in [
        ("acked", d.acked),
        ("rejected", d.rejected),
        ("duplicates", d.duplicates),
        ("confirmed", d.confirmed),
        ("misuse", d.misuse),
        ("crashes", d.crashes),
    ] {
        assert!(n >= 50, "only {n} {what} over 300 random cases: {d:?}");
    }
}

/// Replays every file under `fuzz/regressions/<target>/`.
#[test]
fn regressions_replay() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../regressions");
    let mut replayed = 0;
    for (name, body) in TARGETS {
        let Ok(dir) = std::fs::read_dir(root.join(name)) else { continue };
        let mut files: Vec<PathBuf> = dir
            .map(|e| e.expect("readable directory").path())
            .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
            .collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).expect("readable regression input");
            eprintln!("replaying {}", file.display());
            body(&data);
            replayed += 1;
        }
    }
    eprintln!("{replayed} regression inputs replayed");
}
