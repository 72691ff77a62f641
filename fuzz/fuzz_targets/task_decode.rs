#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tasklane_fuzz::task_decode::run(data));
