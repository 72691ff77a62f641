#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tasklane_fuzz::spool_codec::run(data));
