//! Replays and minimises one input of a fuzz target on stable Rust, without
//! cargo-fuzz; also measures how deep random inputs drive the lane target.
//!
//! ```text
//! cargo run -p tasklane-fuzz --release --example fuzz_case -- replay TARGET FILE
//! cargo run -p tasklane-fuzz --release --example fuzz_case -- minimize TARGET IN OUT [MESSAGE]
//! cargo run -p tasklane-fuzz --release --example fuzz_case -- depth [RUNS]
//! ```
//!
//! `replay` runs the body once (with `TASKLANE_FUZZ_TRACE=1` the lane
//! target prints every input and output) and exits 101 on a panic.
//! `minimize` removes chunks of the input, then zeroes bytes, as long as
//! the body still panics with a message containing MESSAGE (default: the
//! message of the first run), and writes the result to OUT. It works on
//! inputs from `fuzz/artifacts/` when `cargo fuzz tmin` is not at hand.
//! `depth` runs the lane target on RUNS (default 300) pseudo-random inputs
//! and prints what they reached (`lane_inputs::Depth`).

use std::panic;
use std::process::ExitCode;

use tasklane_fuzz::{lane_inputs, Body, TARGETS};

fn usage() -> ExitCode {
    eprintln!("usage: fuzz_case replay TARGET FILE | minimize TARGET IN OUT [MESSAGE] | depth [RUNS]");
    let names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    eprintln!("targets: {}", names.join(", "));
    ExitCode::from(2)
}

fn body(name: &str) -> Option<Body> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// The body's panic message for `data`, or `None` when it passes.
fn panic_message(body: Body, data: &[u8]) -> Option<String> {
    let err = panic::catch_unwind(|| body(data)).err()?;
    let text = err.downcast_ref::<String>().cloned().or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()));
    Some(text.unwrap_or_default())
}

fn minimize(body: Body, mut data: Vec<u8>, message: Option<String>) -> Vec<u8> {
    panic::set_hook(Box::new(|_| {}));
    let Some(first) = panic_message(body, &data) else { panic!("the input does not fail") };
    let message = message.unwrap_or(first);
    let fails = |d: &[u8]| panic_message(body, d).is_some_and(|m| m.contains(&message));
    assert!(fails(&data), "the input fails, but not with {message:?}");
    let mut chunk = data.len() / 2;
    while chunk >= 1 {
        let mut i = 0;
        while i + chunk <= data.len() {
            let mut c = data.clone();
            c.drain(i..i + chunk);
            if fails(&c) {
                data = c;
            } else {
                i += chunk;
            }
        }
        chunk /= 2;
    }
    for i in 0..data.len() {
        if data[i] != 0 {
            let mut c = data.clone();
            c[i] = 0;
            if fails(&c) {
                data = c;
            }
        }
    }
    let _ = panic::take_hook();
    eprintln!("still fails with: {message}");
    data
}

fn depth(runs: usize) {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let start = std::time::Instant::now();
    let mut depth = lane_inputs::Depth::default();
    for _ in 0..runs {
        let len = (next() % 4096) as usize;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        depth.merge(lane_inputs::run_for_depth(&data));
    }
    println!("{runs} runs in {:?}: {depth:?}", start.elapsed());
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["replay", target, file] => {
            let Some(body) = body(target) else { return usage() };
            match panic_message(body, &read(file)) {
                None => {
                    println!("passes");
                    ExitCode::SUCCESS
                }
                Some(_) => ExitCode::from(101),
            }
        }
        ["minimize", target, input, output, rest @ ..] if rest.len() <= 1 => {
            let Some(body) = body(target) else { return usage() };
            let data = read(input);
            let before = data.len();
            let data = minimize(body, data, rest.first().map(|m| m.to_string()));
            std::fs::write(output, &data).unwrap_or_else(|e| panic!("cannot write {output}: {e}"));
            println!("{before} -> {} bytes, written to {output}", data.len());
            ExitCode::SUCCESS
        }
        ["depth"] => {
            depth(300);
            ExitCode::SUCCESS
        }
        ["depth", runs] => match runs.parse() {
            Ok(n) => {
                depth(n);
                ExitCode::SUCCESS
            }
            Err(_) => usage(),
        },
        _ => usage(),
    }
}
