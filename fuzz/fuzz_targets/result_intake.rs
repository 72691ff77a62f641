#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tasklane_fuzz::result_intake::run(data));
