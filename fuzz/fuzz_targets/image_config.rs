//! libFuzzer entry for `atoll_fuzzing::image_config`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| atoll_fuzzing::image_config(data));
