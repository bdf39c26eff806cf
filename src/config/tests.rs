use super::*;
use std::collections::HashMap;

fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::from_lookup(|k| map.get(k).cloned())
}

const SECRET: (&str, &str) = ("FLASHDROP_JWT_SECRET", "0123456789abcdef0123456789abcdef");

#[test]
fn defaults_apply_when_only_the_secret_is_set() {
    let s = settings(&[SECRET]).unwrap();
    assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(s.mongodb_db, "flashdrop");
    assert_eq!(s.log_format, LogFormat::Text);
    assert_eq!(s.rate_limit_ip, DEFAULT_RATE_LIMIT_IP.parse().unwrap());
    assert_eq!(s.ws_stock_frame_gap, None, "every change is a frame");
    assert_eq!(s.worker_threads, None, "as many as the process has CPUs");
    let s = settings(&[SECRET, ("FLASHDROP_WORKER_THREADS", "1")]).unwrap();
    assert_eq!(s.worker_threads, Some(1));
}

#[test]
fn stock_frames_per_second_become_the_gap_between_two_frames() {
    let s = settings(&[SECRET, ("FLASHDROP_WS_STOCK_FRAMES_PER_SECOND", "5")]).unwrap();
    assert_eq!(s.ws_stock_frame_gap, Some(Duration::from_millis(200)));
    let s = settings(&[SECRET, ("FLASHDROP_WS_STOCK_FRAMES_PER_SECOND", "off")]).unwrap();
    assert_eq!(s.ws_stock_frame_gap, None);
}

#[test]
fn every_bad_value_names_its_variable() {
    let cases = [
        ("FLASHDROP_LISTEN", "nowhere"),
        ("FLASHDROP_REDIS_URL", "http://x"),
        ("FLASHDROP_MONGODB_URI", "postgres://x"),
        ("FLASHDROP_MONGODB_DB", "a.b"),
        ("FLASHDROP_LOG", "[[["),
        ("FLASHDROP_LOG_FORMAT", "xml"),
        ("FLASHDROP_RATE_LIMIT_BUYER", "ten"),
        ("FLASHDROP_RATE_LIMIT_IP", "5/s,burst=x"),
        ("FLASHDROP_TRUST_FORWARDED_FOR", "maybe"),
        ("FLASHDROP_MONGODB_TIMEOUT", "soon"),
        ("FLASHDROP_REDIS_CLUSTER", "yes"),
        ("FLASHDROP_REDIS_URL", "redis://a:1,redis://b:2"),
        ("FLASHDROP_WS_MAX_CONNECTIONS", "0"),
        ("FLASHDROP_WS_MAX_PER_IP", "many"),
        ("FLASHDROP_WS_STOCK_FRAMES_PER_SECOND", "0"),
        ("FLASHDROP_WS_STOCK_FRAMES_PER_SECOND", "1001"),
        ("FLASHDROP_SEED_KEY", "short"),
        ("FLASHDROP_DRAIN", "soon"),
        ("FLASHDROP_WORKER_THREADS", "0"),
        ("FLASHDROP_WORKER_THREADS", "all"),
        ("FLASHDROP_SEED_KEY", SECRET.1),
    ];
    for (var, value) in cases {
        let err = settings(&[SECRET, (var, value)]).unwrap_err();
        assert_eq!(err.var, var, "{value}");
        assert!(err.to_string().starts_with(var));
    }
}

#[test]
fn the_jwt_secret_is_required_and_long() {
    assert_eq!(settings(&[]).unwrap_err().var, "FLASHDROP_JWT_SECRET");
    let short = settings(&[("FLASHDROP_JWT_SECRET", "short")]).unwrap_err();
    assert!(short.reason.contains("32 bytes"));
}

#[test]
fn secrets_do_not_print() {
    let s = settings(&[SECRET]).unwrap();
    let printed = format!("{s:?}");
    assert!(!printed.contains(SECRET.1));
    assert!(printed.contains("Secret(***)"));
}

#[test]
fn rate_limits_parse() {
    assert_eq!("off".parse::<RateLimit>().unwrap(), RateLimit::Off);
    let RateLimit::PerSecond { rate, burst } = "5/s,burst=9".parse().unwrap() else {
        panic!("expected a quota");
    };
    assert_eq!((rate.get(), burst.get()), (5, 9));
    assert!("0/s".parse::<RateLimit>().is_err());
}
