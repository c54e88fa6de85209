//! `tidemark serve` configuration: the command log backend and its Kafka settings.

use connectors::kafka::KafkaCluster;
use serving::config::{Config, LogBackend, ServeArgs};

fn load(toml: &str, log_flag: Option<&str>) -> Result<Config, String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tidemark.toml");
    std::fs::write(&file, toml).unwrap();
    let args = ServeArgs {
        config: file,
        log: log_flag.map(str::to_string),
        ..ServeArgs::default()
    };
    Config::load(&args).map_err(|error| error.to_string())
}

#[test]
fn the_embedded_log_is_the_default() {
    let config = load("", None).unwrap();
    assert_eq!(config.log_backend().unwrap(), LogBackend::Embedded);
}

#[test]
fn kafka_settings_come_from_the_file_and_the_flag_wins() {
    let toml = r#"
        log = "kafka://file-broker:9092"
        [kafka]
        topic_prefix = "shop."
        partitions = 12
        linger_ms = 10
        [kafka.properties]
        "security.protocol" = "SASL_SSL"
        "sasl.mechanism" = "SCRAM-SHA-512"
    "#;
    let config = load(toml, None).unwrap();
    let LogBackend::Kafka(cluster) = config.log_backend().unwrap() else {
        panic!("not kafka");
    };
    assert_eq!(cluster.brokers, "file-broker:9092");
    assert_eq!(cluster.topic("tidemark.commands"), "shop.tidemark.commands");
    assert_eq!(cluster.properties["sasl.mechanism"], "SCRAM-SHA-512");
    assert_eq!(config.kafka.partitions, 12);
    assert_eq!(config.kafka.linger_ms, 10);
    assert_eq!(load("", None).unwrap().kafka.linger_ms, 5);

    let config = load(toml, Some("kafka://a:1,b:2")).unwrap();
    let LogBackend::Kafka(KafkaCluster { brokers, .. }) = config.log_backend().unwrap() else {
        panic!("not kafka");
    };
    assert_eq!(brokers, "a:1,b:2");
}

#[test]
fn a_bad_log_or_unsafe_kafka_setting_is_refused_with_the_reason() {
    let error = load("", Some("kafka://no-port")).unwrap_err();
    assert!(error.contains("kafka://host:port"), "{error}");
    let error = load(r#"log = "postgres://db""#, None).unwrap_err();
    assert!(error.contains("embedded"), "{error}");
    let error = load(
        "log = \"kafka://k:9092\"\n[kafka.properties]\n\"enable.idempotence\" = \"false\"\n",
        None,
    )
    .unwrap_err();
    assert!(
        error.contains("enable.idempotence=false is not allowed"),
        "{error}"
    );
    let error = load("log = \"kafka://k:9092\"\n[kafka]\npartitions = 0\n", None).unwrap_err();
    assert!(error.contains("partitions"), "{error}");
    let error = load(
        "log = \"kafka://k:9092\"\n[kafka]\nlinger_ms = 60000\n",
        None,
    )
    .unwrap_err();
    assert!(error.contains("linger_ms"), "{error}");
    let error = load("[kafka]\nretention = 3\n", None).unwrap_err();
    assert!(error.contains("retention"), "{error}");
}

#[test]
fn a_bad_history_location_is_refused_with_the_reason() {
    let error = load("[history]\nurl = \"ftp://host/history\"\n", None).unwrap_err();
    assert!(error.contains("s3://bucket/prefix"), "{error}");
    let error = load("[history]\nurl = \"s3://\"\n", None).unwrap_err();
    assert!(error.contains("name a bucket"), "{error}");
    let error = load(
        "[history]\nurl = \"s3://bucket/history\"\n[history.options]\ncolour = \"red\"\n",
        None,
    )
    .unwrap_err();
    assert!(error.contains("unknown S3 setting \"colour\""), "{error}");
    let config = load(
        "[history]\nurl = \"s3://bucket/history\"\n[history.options]\naws_region = \"eu-west-1\"\n",
        None,
    )
    .unwrap();
    assert_eq!(config.history.url, "s3://bucket/history");
}

#[test]
fn a_metrics_step_out_of_range_is_refused_with_the_reason() {
    let error = load("[analytics]\nstep_ms = 0\n", None).unwrap_err();
    assert!(
        error.contains("analytics.step_ms must be between 1 and 60000"),
        "{error}"
    );
    let config = load("[analytics]\nstep_ms = 250\n", None).unwrap();
    assert_eq!(config.analytics.step_ms, 250);
}

#[test]
fn gateway_settings_are_checked_where_they_are_read() {
    let config = load(
        "[gateway]\ncors_origins = [\"https://shop.example\", \"http://localhost:5173\"]\npublic_per_minute = 30\n",
        None,
    )
    .unwrap();
    assert_eq!(config.gateway.cors_origins.len(), 2);
    assert_eq!(config.gateway.public_per_minute, 30);
    assert_eq!(config.gateway.authenticated_per_minute, 1_000);
    for (toml, reason) in [
        (
            "[gateway]\ncors_origins = [\"https://shop.example/\"]\n",
            "gateway.cors_origins: \"https://shop.example/\"",
        ),
        (
            "[gateway]\ncors_origins = [\"shop.example\"]\n",
            "is not `*` or an origin",
        ),
        (
            "[gateway]\npublic_per_minute = 0\n",
            "gateway.public_per_minute must be between 1 and 10000000",
        ),
        (
            "[gateway]\nrequest_timeout_ms = 5\n",
            "gateway.request_timeout_ms must be between 100 and 3600000",
        ),
        (
            "tls_cert = \"cert.pem\"\n",
            "tls_cert and tls_key (--tls-cert, --tls-key) go together",
        ),
        (
            "[[gateway.retired]]\nprefix = \"api/v0\"\ndeprecated_at = \"2027-01-01T00:00:00Z\"\n",
            "gateway.retired: prefix \"api/v0\" is not a path",
        ),
        (
            "[[gateway.retired]]\nprefix = \"/api/v0\"\ndeprecated_at = \"next year\"\n",
            "deprecated_at \"next year\" is not an RFC 3339 time",
        ),
        (
            "[[gateway.retired]]\nprefix = \"/api/v0\"\ndeprecated_at = \"2027-01-01T00:00:00Z\"\nsunset_at = \"2026-01-01T00:00:00Z\"\n",
            "sunset_at is before deprecated_at",
        ),
    ] {
        let error = load(toml, None).unwrap_err();
        assert!(error.contains(reason), "{toml}: {error}");
    }
}

#[test]
fn oauth_clients_and_service_accounts_are_checked_where_they_are_read() {
    let config = load(
        "[auth.service_accounts]\nreporting = [\"reports:read\", \"analytics:read\"]\n\n[[auth.clients]]\nclient_id = \"shop-web\"\nredirect_uris = [\"https://shop.example/callback\"]\n",
        None,
    )
    .unwrap();
    // Added sets join the built-in one.
    assert_eq!(config.auth.service_accounts.len(), 2);
    assert!(config.auth.service_accounts.contains_key("order_service"));
    assert_eq!(config.auth.clients[0].client_id, "shop-web");
    for (toml, reason) in [
        (
            "[[auth.clients]]\nclient_id = \"shop-web\"\nredirect_uris = [\"http://shop.example/callback\"]\n",
            "must be https, or http on a loopback address",
        ),
        (
            "[[auth.clients]]\nclient_id = \"tidemark-cli\"\nredirect_uris = [\"https://a.example/\"]\n",
            "registered twice",
        ),
        (
            "[auth.service_accounts]\nreporting = [\"reports:everything\"]\n",
            "\"reports:everything\" is not a scope",
        ),
        (
            "[auth]\nrefresh_token_ttl_s = 5\n",
            "auth.refresh_token_ttl_s must be between 60 and 31536000",
        ),
    ] {
        let error = load(toml, None).unwrap_err();
        assert!(error.contains(reason), "{toml}: {error}");
    }
}

#[test]
fn traces_go_to_an_http_collector_and_a_share_of_them_is_kept() {
    let config = load("", None).unwrap();
    assert_eq!(config.traces_url().unwrap(), None, "no traces by default");
    assert_eq!(config.trace_sample_ratio, 0.1);
    for (endpoint, url) in [
        ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        (
            "http://agent:4318/otlp/v1/traces",
            "http://agent:4318/otlp/v1/traces",
        ),
    ] {
        let config = load(&format!("otlp_endpoint = {endpoint:?}\n"), None).unwrap();
        assert_eq!(config.traces_url().unwrap().as_deref(), Some(url));
    }
    for (toml, reason) in [
        ("otlp_endpoint = \"https://collector:4318\"\n", "is HTTPS"),
        (
            "otlp_endpoint = \"collector:4318\"\n",
            "is not an http:// URL",
        ),
        (
            "otlp_endpoint = \"http:///v1/traces\"\n",
            "has no usable host",
        ),
        (
            "trace_sample_ratio = 1.5\n",
            "trace_sample_ratio must be between 0 and 1",
        ),
        (
            "trace_sample_ratio = -0.1\n",
            "trace_sample_ratio must be between 0 and 1",
        ),
    ] {
        let error = load(toml, None).unwrap_err();
        assert!(error.contains(reason), "{toml}: {error}");
    }
}
