//! libFuzzer entry for `atoll_fuzzing::compose`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| atoll_fuzzing::compose(data));
