//! libFuzzer entry for `atoll_fuzzing::dns_message`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| atoll_fuzzing::dns_message(data));
