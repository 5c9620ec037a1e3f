//! libFuzzer entry for `atoll_fuzzing::api_bodies`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| atoll_fuzzing::api_bodies(data));
