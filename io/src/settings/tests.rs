use std::time::Duration;

use tasklane_core::{ConsumeMode, Failover};

use super::{EndpointSettings, Problems};

const FULL: &str = r#"
amqp_url = "amqp://ep-1:pw@broker.example:5672/prod"
tls_ca = "/etc/tasklane/ca.pem"
endpoint = "ep-1"
spool_dir = "/var/lib/tasklane/ep-1"
metrics = "127.0.0.1:9464"
heartbeat_secs = 5
blocked_timeout_secs = 45
prefetch = 250
consume_mode = "exclusive"
max_spooled_tasks = 5000
max_spooled_bytes = 104857600
max_body_bytes = 1048576
workers = 3
"#;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn every_key_reaches_the_endpoint_configuration() {
    let (cfg, metrics) = EndpointSettings::from_toml(FULL, "f.toml").unwrap().build().unwrap();
    assert_eq!(cfg.brokers[0].url.host(), "broker.example");
    assert_eq!(cfg.brokers[0].url.vhost(), "prod");
    assert_eq!(cfg.brokers[0].tls.ca_file.as_deref(), Some(std::path::Path::new("/etc/tasklane/ca.pem")));
    assert_eq!(cfg.lane.endpoint.as_str(), "ep-1");
    assert_eq!(cfg.spool_dir, std::path::Path::new("/var/lib/tasklane/ep-1"));
    assert_eq!(metrics, Some("127.0.0.1:9464".parse().unwrap()));
    assert_eq!(cfg.brokers[0].heartbeat, 5);
    assert_eq!(cfg.lane.blocked_timeout, Duration::from_secs(45));
    assert_eq!(cfg.lane.prefetch, 250);
    assert_eq!(cfg.lane.consume_mode, ConsumeMode::Exclusive);
    assert_eq!(
        (cfg.lane.max_spooled_tasks, cfg.lane.max_spooled_bytes, cfg.lane.max_body_bytes),
        (5000, 100 << 20, 1 << 20)
    );
}

#[test]
fn workers_is_read_from_file_and_environment_and_checked() {
    let mut s = EndpointSettings::from_toml(FULL, "f.toml").unwrap();
    assert_eq!(s.workers, Some(3));
    s.apply_env(env(&[("TASKLANE_WORKERS", "5")])).unwrap();
    assert_eq!(s.workers, Some(5));
    let Problems(p) = EndpointSettings::from_toml("workers = 0", "f.toml").unwrap_err();
    assert_eq!(p, ["f.toml: workers: must be from 1 to 4096, not 0"]);
    let Problems(p) = EndpointSettings::default().apply_env(env(&[("TASKLANE_WORKERS", "two")])).unwrap_err();
    assert_eq!(p, ["TASKLANE_WORKERS: must be an integer, not \"two\""]);
}

#[test]
fn the_environment_overrides_the_file_and_ignores_foreign_variables() {
    let mut s = EndpointSettings::from_toml(FULL, "f.toml").unwrap();
    s.apply_env(env(&[
        ("TASKLANE_HEARTBEAT_SECS", "20"),
        ("TASKLANE_BLOCKED_TIMEOUT_SECS", "90"),
        ("TASKLANE_CONSUME_MODE", "single-active"),
        ("TASKLANE_TEST_TLS_DIR", "/not/a/setting"),
        ("HEARTBEAT_SECS", "1"),
    ]))
    .unwrap();
    let (cfg, _) = s.build().unwrap();
    assert_eq!((cfg.brokers[0].heartbeat, cfg.lane.blocked_timeout), (20, Duration::from_secs(90)));
    assert_eq!(cfg.lane.consume_mode, ConsumeMode::SingleActive);
    assert_eq!(cfg.lane.prefetch, 250, "what the environment does not name stays as the file says");
}

#[test]
fn every_problem_of_a_file_is_reported_on_a_line_of_its_own() {
    let file = r#"
endpoint = "bad id!"
heartbeat_secs = 0
blocked_timeout_secs = "soon"
prefetch = 70000
consume_mode = "greedy"
metrics = "localhost"
prefech = 10
[lane]
"#;
    let Problems(problems) = EndpointSettings::from_toml(file, "f.toml").unwrap_err();
    let want = [
        "f.toml: blocked_timeout_secs: must be an integer, not a string",
        "f.toml: consume_mode: must be \"single-active\" or \"exclusive\", not \"greedy\"",
        "f.toml: heartbeat_secs: must be from 1 to 65535, not 0",
        "f.toml: lane: unknown setting (known: amqp_url, ",
        "f.toml: metrics: \"localhost\" is not an address like 127.0.0.1:9464",
        "f.toml: prefech: unknown setting (known: ",
        "f.toml: prefetch: must be from 1 to 65535, not 70000",
    ];
    assert_eq!(problems.len(), want.len(), "{problems:#?}");
    for (got, want) in problems.iter().zip(want) {
        assert!(got.starts_with(want), "{got:?} should start with {want:?}");
        assert!(!got.contains('\n'));
    }
}

#[test]
fn build_reports_missing_and_inconsistent_settings_together() {
    let mut s = EndpointSettings::from_toml("endpoint = \"bad id!\"\nmax_spooled_bytes = 10\nmax_body_bytes = 20", "f")
        .unwrap();
    s.amqp_url = Some("http://x/".into());
    let Problems(problems) = s.build().unwrap_err();
    assert_eq!(problems.len(), 4, "{problems:#?}");
    assert_eq!(problems[0], "spool_dir: missing (set it in the file or as TASKLANE_SPOOL_DIR)");
    assert!(problems[1].starts_with("endpoint: \"bad id!\" is not an endpoint id"), "{}", problems[1]);
    assert!(problems[2].starts_with("amqp_url: ") && problems[2].contains("amqp://"), "{}", problems[2]);
    assert!(problems[3].starts_with("max_spooled_bytes: 10 is less than max_body_bytes 20"), "{}", problems[3]);
    // A bound that clashes with a default is caught by core's own check.
    let s = EndpointSettings::from_toml(
        "endpoint = \"e\"\nspool_dir = \"/s\"\namqp_url = \"amqp://127.0.0.1/%2f\"\nmax_spooled_bytes = 10",
        "f",
    )
    .unwrap();
    let Problems(problems) = s.build().unwrap_err();
    assert_eq!(problems.len(), 1);
    assert!(problems[0].contains("max_spooled_bytes"), "{problems:?}");
}

#[test]
fn environment_problems_name_the_variable() {
    let mut s = EndpointSettings::default();
    let Problems(problems) =
        s.apply_env(env(&[("TASKLANE_PREFETCH", "many"), ("TASKLANE_BLOCKED_TIMEOUT_SECS", "999999")])).unwrap_err();
    assert_eq!(
        problems,
        [
            "TASKLANE_BLOCKED_TIMEOUT_SECS: must be from 1 to 86400, not 999999",
            "TASKLANE_PREFETCH: must be an integer, not \"many\"",
        ]
    );
}

#[test]
fn an_empty_variable_counts_as_unset() {
    let mut s = EndpointSettings::from_toml(FULL, "f.toml").unwrap();
    s.apply_env(env(&[("TASKLANE_ENDPOINT", ""), ("TASKLANE_PREFETCH", " "), ("TASKLANE_HEARTBEAT_SECS", "7")]))
        .unwrap();
    let (cfg, _) = s.build().unwrap();
    assert_eq!(cfg.lane.endpoint.as_str(), "ep-1", "the file's endpoint stays");
    assert_eq!((cfg.lane.prefetch, cfg.brokers[0].heartbeat), (250, 7));
}

#[test]
fn a_syntax_error_is_one_line_with_its_line_number() {
    let Problems(problems) = EndpointSettings::from_toml("endpoint = \"e\"\nprefetch = = 3\n", "f.toml").unwrap_err();
    assert_eq!(problems.len(), 1);
    assert!(problems[0].starts_with("f.toml: not valid TOML (line 2): "), "{}", problems[0]);
    assert!(!problems[0].contains('\n'));
}

#[test]
fn load_puts_the_environment_over_the_file_and_reports_the_problems_of_both() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ep.toml");
    std::fs::write(&path, "endpoint = \"from-file\"\nprefetch = 0\nspool_dir = \"/file\"\n").unwrap();
    let vars = env(&[("TASKLANE_SPOOL_DIR", "/env"), ("TASKLANE_HEARTBEAT_SECS", "soon")]);
    let (settings, problems) = EndpointSettings::load(Some(&path), vars);
    assert_eq!(settings.endpoint.as_deref(), Some("from-file"));
    assert_eq!(settings.spool_dir.as_deref(), Some(std::path::Path::new("/env")));
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("prefetch"), "{problems:?}");
    assert!(problems[1].contains("TASKLANE_HEARTBEAT_SECS"), "{problems:?}");

    let (_, problems) = EndpointSettings::load(Some(&dir.path().join("missing.toml")), env(&[]));
    assert_eq!(problems.len(), 1);
    assert!(problems[0].contains("missing.toml: cannot read"), "{problems:?}");
    assert_eq!(EndpointSettings::load(None, env(&[])).1, Vec::<String>::new());
}

#[test]
fn a_cluster_is_a_comma_list_or_an_array_with_a_failover_order() {
    let base = "endpoint = \"ep-1\"\nspool_dir = \"/s\"\n";
    let list = format!("{base}amqp_url = \"amqp://a:1@n1:5673/v,amqp://b:2@n2:5674/v\"\nfailover = \"in-order\"");
    let (cfg, _) = EndpointSettings::from_toml(&list, "f").unwrap().build().unwrap();
    let nodes: Vec<_> = cfg.brokers.iter().map(|b| (b.url.host().to_string(), b.url.username().to_string())).collect();
    assert_eq!(nodes, [("n1".to_string(), "a".to_string()), ("n2".to_string(), "b".to_string())]);
    assert_eq!((cfg.lane.addresses, cfg.lane.failover), (2, Failover::InOrder));

    // A comma inside a URL of the array is the URL's own.
    let array = format!("{base}amqp_urls = [\"amqp://u:p,w@n1\", \"amqp://u:p,w@n2\", \"amqp://u:p,w@n3\"]");
    let (cfg, _) = EndpointSettings::from_toml(&array, "f").unwrap().build().unwrap();
    assert_eq!(cfg.brokers.iter().map(|b| b.url.password()).collect::<Vec<_>>(), ["p,w"; 3]);
    assert_eq!((cfg.lane.addresses, cfg.lane.failover), (3, Failover::Shuffle), "shuffle by default");

    // The environment's list replaces the file's array.
    let mut s = EndpointSettings::from_toml(&array, "f").unwrap();
    s.apply_env(env(&[("TASKLANE_AMQP_URL", "amqp://x1,amqp://x2"), ("TASKLANE_FAILOVER", "in-order")])).unwrap();
    let (cfg, _) = s.build().unwrap();
    assert_eq!(cfg.brokers.iter().map(|b| b.url.host()).collect::<Vec<_>>(), ["x1", "x2"]);
    assert_eq!(cfg.lane.failover, Failover::InOrder);
}

#[test]
fn every_bad_url_of_a_list_is_a_problem_of_its_own() {
    let base = "endpoint = \"ep-1\"\nspool_dir = \"/s\"\n";
    let s =
        EndpointSettings::from_toml(&format!("{base}amqp_urls = [\"amqp://n1\", \"http://n2\", \"amqp://n3:0\"]"), "f")
            .unwrap();
    let Problems(problems) = s.build().unwrap_err();
    assert_eq!(
        problems,
        [
            "amqp_urls: URL 2 of 3: AMQP URL must start with amqp:// or amqps://",
            "amqp_urls: URL 3 of 3: AMQP URL port \"0\" is not a number in 1..=65535",
        ]
    );
    let mut s = EndpointSettings::from_toml(base, "f").unwrap();
    s.amqp_url = Some("amqp://n1,,amqp://n3:x".into());
    let Problems(problems) = s.build().unwrap_err();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].starts_with("amqp_url: URL 2 of 3: "), "{problems:?}");
    assert!(problems[1].starts_with("amqp_url: URL 3 of 3: "), "{problems:?}");
}

#[test]
fn amqp_url_and_amqp_urls_in_one_file_and_a_bad_failover_are_problems() {
    let file = "amqp_url = \"amqp://a\"\namqp_urls = [\"amqp://b\"]\nfailover = \"round-robin\"\namqp_urls2 = 1";
    let Problems(problems) = EndpointSettings::from_toml(file, "f.toml").unwrap_err();
    assert_eq!(problems[0], "f.toml: amqp_url and amqp_urls: give one of them, not both");
    assert!(problems[1].starts_with("f.toml: amqp_urls2: unknown setting (known: amqp_url, amqp_urls, failover, "));
    assert_eq!(problems[2], "f.toml: failover: must be \"in-order\" or \"shuffle\", not \"round-robin\"");
    let Problems(problems) = EndpointSettings::from_toml("amqp_urls = [1]\n", "f").unwrap_err();
    assert_eq!(problems, ["f: amqp_urls: must be an array of strings, not of integers"]);
    let Problems(problems) = EndpointSettings::from_toml("amqp_urls = []\n", "f").unwrap_err();
    assert_eq!(problems, ["f: amqp_urls: must name at least one URL"]);
}
