//! Replays every input under `fuzz/regressions/<target>/` (crashes the fuzzers found, and
//! seeds worth keeping) through its target: each is a regression test.

#[test]
fn every_saved_fuzz_input_passes_its_target() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions");
    let mut ran = 0;
    for (name, target) in atoll_fuzzing::TARGETS {
        let dir = root.join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries {
            let p = e.unwrap().path();
            let data = std::fs::read(&p).unwrap();
            let r = std::panic::catch_unwind(|| target(&data));
            assert!(r.is_ok(), "{name}: {} fails again", p.display());
            ran += 1;
        }
    }
    assert!(ran > 0, "no saved inputs under {}", root.display());
}
