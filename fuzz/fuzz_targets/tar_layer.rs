//! libFuzzer entry for `atoll_fuzzing::tar_layer`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| atoll_fuzzing::tar_layer(data));
