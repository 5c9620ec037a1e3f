//! libFuzzer entry for `atoll_fuzzing::manifest`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| atoll_fuzzing::manifest(data));
