//! What `tasklane endpoint` and `tasklane demo` do with a task: echo it, or
//! run a shell command on it.

use std::process::Stdio;

use bytes::Bytes;
use tasklane_core::ResultStatus;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// How an endpoint of the CLI answers tasks.
#[derive(Clone, Debug)]
pub enum Handler {
    /// The result is the payload.
    Echo,
    /// `sh -c CMD` with the payload on stdin; stdout is the result, a
    /// non-zero exit makes it `failed`.
    Exec(String),
}

impl Handler {
    /// Runs one task.
    pub async fn run(&self, payload: Bytes) -> (ResultStatus, Bytes) {
        match self {
            Handler::Echo => (ResultStatus::Ok, payload),
            Handler::Exec(cmd) => exec(cmd, payload).await,
        }
    }
}

async fn exec(cmd: &str, payload: Bytes) -> (ResultStatus, Bytes) {
    let child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return (ResultStatus::Failed, Bytes::from(format!("cannot run sh -c {cmd:?}: {e}"))),
    };
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // Feed stdin while the output is read, so a large payload cannot
    // deadlock against a full stdout pipe. A command that does not read its
    // stdin closes the pipe early: that is not an error of the task.
    let feed = async move {
        let _ = stdin.write_all(&payload).await;
        drop(stdin);
    };
    let (_, output) = tokio::join!(feed, child.wait_with_output());
    match output {
        Ok(out) if out.status.success() => (ResultStatus::Ok, Bytes::from(out.stdout)),
        Ok(out) => {
            let body = if out.stdout.is_empty() { out.stderr } else { out.stdout };
            (ResultStatus::Failed, Bytes::from(body))
        }
        Err(e) => (ResultStatus::Failed, Bytes::from(format!("sh -c {cmd:?} failed: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exec_maps_stdout_and_exit_status() {
        let up = Handler::Exec("tr a-z A-Z".into());
        assert_eq!(up.run(Bytes::from("abc")).await, (ResultStatus::Ok, Bytes::from("ABC")));
        let fail = Handler::Exec("cat; exit 3".into());
        assert_eq!(fail.run(Bytes::from("x")).await, (ResultStatus::Failed, Bytes::from("x")));
        let stderr_only = Handler::Exec("echo oops >&2; exit 1".into());
        assert_eq!(stderr_only.run(Bytes::new()).await, (ResultStatus::Failed, Bytes::from("oops\n")));
        let ignores_stdin = Handler::Exec("echo hi".into());
        let big = Bytes::from(vec![b'x'; 1 << 20]);
        assert_eq!(ignores_stdin.run(big).await, (ResultStatus::Ok, Bytes::from("hi\n")));
        assert_eq!(Handler::Echo.run(Bytes::from("p")).await, (ResultStatus::Ok, Bytes::from("p")));
    }
}
