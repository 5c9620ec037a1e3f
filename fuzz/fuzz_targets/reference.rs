//! libFuzzer entry for `atoll_fuzzing::reference`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| atoll_fuzzing::reference(data));
