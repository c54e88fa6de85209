//! What every Kafka client of tidemark shares: where the cluster is, the librdkafka
//! properties a user passes through (SASL, TLS, ...), the settings the guarantees rest
//! on (set in one place for every consumer and producer), and topic creation.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::error::{kafka_error, retryable, retryable_code};
use crate::{Error, Result};

/// A Kafka cluster and how to talk to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaCluster {
    /// `host:port[,host:port]`.
    pub brokers: String,
    /// Prepended to every topic and consumer group tidemark names (other systems'
    /// topics keep their names), so that deployments sharing a cluster stay apart.
    pub topic_prefix: String,
    /// librdkafka properties passed through unchanged (`security.protocol`, `sasl.*`,
    /// `ssl.*`, `client.id`, ...). Settings the guarantees rest on are checked.
    pub properties: BTreeMap<String, String>,
}

/// Properties tidemark sets itself; a user value other than the one given is refused,
/// because exactly-once delivery and replay depend on it.
const REQUIRED: &[(&str, &[&str], &str)] = &[
    (
        "enable.idempotence",
        &["true"],
        "an idempotent producer is what keeps a retried append from writing a command twice",
    ),
    (
        "acks",
        &["all", "-1"],
        "a command is acknowledged only once every in-sync replica has it",
    ),
    (
        "isolation.level",
        &["read_committed"],
        "the log and the sinks must never read records of aborted transactions",
    ),
    (
        "enable.auto.commit",
        &["false"],
        "tidemark tracks its own positions in the log; committed group offsets play no part",
    ),
];

/// What every tidemark consumer reads with: only records of committed transactions,
/// and no group offsets committed behind its back (it tracks its own positions).
const READ_COMMITTED: &[(&str, &str)] = &[
    ("enable.auto.commit", "false"),
    ("isolation.level", "read_committed"),
];

/// What every tidemark producer writes with: a retried send is not written twice, and
/// a record counts as written once every in-sync replica has it.
const IDEMPOTENT: &[(&str, &str)] = &[("enable.idempotence", "true"), ("acks", "all")];

impl KafkaCluster {
    /// Parses `kafka://host:port[,host:port]`.
    pub fn from_url(url: &str) -> Result<KafkaCluster> {
        let brokers = url
            .strip_prefix("kafka://")
            .ok_or_else(|| Error::Config(format!("{url:?} is not a kafka://host:port URL")))?
            .trim_end_matches('/');
        if brokers.is_empty()
            || brokers.split(',').any(|broker| {
                broker
                    .rsplit_once(':')
                    .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            })
        {
            return Err(Error::Config(format!(
                "{url:?}: expected kafka://host:port[,host:port]"
            )));
        }
        Ok(KafkaCluster {
            brokers: brokers.to_string(),
            topic_prefix: String::new(),
            properties: BTreeMap::new(),
        })
    }

    /// Refuses properties that would break a guarantee, with the reason.
    pub fn validate(&self) -> Result<()> {
        for (key, value) in &self.properties {
            if key == "bootstrap.servers" || key == "metadata.broker.list" {
                return Err(Error::Config(format!(
                    "{key} comes from the kafka:// URL; do not set it as a property"
                )));
            }
            if key == "transactional.id" {
                return Err(Error::Config(
                    "transactional.id is chosen by tidemark for each producer".into(),
                ));
            }
            if let Some((_, allowed, why)) = REQUIRED.iter().find(|(name, _, _)| name == key) {
                if !allowed.contains(&value.as_str()) {
                    return Err(Error::Config(format!(
                        "{key}={value} is not allowed: {why} (allowed: {})",
                        allowed.join(" or ")
                    )));
                }
            }
        }
        Ok(())
    }

    /// The name of one of tidemark's topics (or consumer groups) in this deployment.
    pub fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.topic_prefix)
    }

    /// A client configuration with the user's properties and then `settings`.
    pub fn client_config(&self, settings: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        for (key, value) in settings {
            config.set(*key, *value);
        }
        config
    }

    /// A consumer in `group` (prefixed like a topic) that reads only committed records
    /// and commits no offsets by itself, with `settings` for what differs between
    /// consumers (they cannot undo the read-committed settings).
    pub fn read_committed_consumer<C>(
        &self,
        group: &str,
        settings: &[(&str, &str)],
    ) -> Result<BaseConsumer<C>>
    where
        C: ConsumerContext + Default,
    {
        let mut config = self.client_config(&[("group.id", &self.topic(group))]);
        for (key, value) in settings.iter().chain(READ_COMMITTED) {
            config.set(*key, *value);
        }
        config
            .create_with_context(C::default())
            .map_err(kafka_error)
    }

    /// The configuration of an idempotent producer that waits for every in-sync
    /// replica, with `settings` on top (they cannot undo either).
    pub(crate) fn idempotent_producer_config(&self, settings: &[(&str, &str)]) -> ClientConfig {
        let mut config = self.client_config(settings);
        for (key, value) in IDEMPOTENT {
            config.set(*key, *value);
        }
        config
    }

    /// A client that only asks for metadata and watermarks; it joins no group.
    pub(crate) fn metadata_client(&self) -> Result<BaseConsumer> {
        self.client_config(&[]).create().map_err(kafka_error)
    }

    /// Creates the topics that do not exist yet; says which it created. Existing topics
    /// are left as they are.
    pub fn ensure_topics(&self, topics: &[TopicSpec<'_>]) -> Result<Vec<String>> {
        let admin: AdminClient<DefaultClientContext> =
            self.client_config(&[]).create().map_err(kafka_error)?;
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|spec| {
                let mut topic = NewTopic::new(
                    spec.name,
                    spec.partitions,
                    TopicReplication::Fixed(spec.replication_factor),
                );
                for (key, value) in spec.config {
                    topic = topic.set(key, value);
                }
                topic
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = block_on(admin.create_topics(&new, &options)).map_err(kafka_error)?;
        let mut created = Vec::new();
        for result in results {
            match result {
                Ok(name) => created.push(name),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(Error::Kafka {
                        message: format!("could not create topic {name}: {code}"),
                        retryable: retryable_code(code),
                    })
                }
            }
        }
        Ok(created)
    }

    /// Every committed record of `topic` (payloads, in offset order per partition),
    /// as a `read_committed` consumer sees them now.
    pub fn read_topic(&self, topic: &str) -> Result<Vec<Vec<u8>>> {
        let mut assignment = TopicPartitionList::new();
        for partition in 0..self.partitions_of(topic)? as i32 {
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .map_err(kafka_error)?;
        }
        let mut payloads = Vec::new();
        self.read_to_end(&assignment, |_, payload| {
            payloads.push(payload.to_vec());
            Ok(())
        })?;
        Ok(payloads)
    }

    /// Reads every partition of `assignment` from its offset to its current end, as a
    /// `read_committed` consumer, handing each record's key and payload to `each`.
    pub fn read_to_end(
        &self,
        assignment: &TopicPartitionList,
        mut each: impl FnMut(Option<&[u8]>, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let partitions = assignment.count();
        if partitions == 0 {
            return Ok(());
        }
        let consumer: BaseConsumer<EndAware> =
            self.read_committed_consumer("tidemark-reader", &[("enable.partition.eof", "true")])?;
        consumer.assign(assignment).map_err(kafka_error)?;
        let mut at_end = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while at_end < partitions {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(message)) => each(message.key(), message.payload().unwrap_or_default())?,
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => at_end += 1,
                Some(Err(error)) => return Err(kafka_error(error)),
                None if Instant::now() > deadline => {
                    return Err(Error::Kafka {
                        message: format!(
                            "{partitions} partitions were not read to their ends within a minute"
                        ),
                        retryable: true,
                    })
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Writes `records` (key, payload) to `topic` and waits until the cluster has them
    /// (for tools and tests that play another system).
    pub fn write_records(&self, topic: &str, records: &[(&str, &[u8])]) -> Result<()> {
        let producer: BaseProducer = self
            .idempotent_producer_config(&[])
            .create()
            .map_err(kafka_error)?;
        for (key, payload) in records {
            producer
                .send(BaseRecord::to(topic).key(*key).payload(*payload))
                .map_err(|(error, _)| kafka_error(error))?;
        }
        producer.flush(Duration::from_secs(30)).map_err(kafka_error)
    }

    /// How many partitions `topic` has (0 when it does not exist).
    pub fn partitions_of(&self, topic: &str) -> Result<usize> {
        let metadata = self
            .metadata_client()?
            .fetch_metadata(Some(topic), Duration::from_secs(30))
            .map_err(kafka_error)?;
        Ok(metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map_or(0, |t| t.partitions().len()))
    }

    /// Waits until the cluster answers a metadata request.
    pub fn wait_until_reachable(&self, timeout: Duration) -> Result<()> {
        let consumer = self.metadata_client()?;
        let deadline = Instant::now() + timeout;
        loop {
            match consumer.fetch_metadata(None, Duration::from_millis(500)) {
                Ok(_) => return Ok(()),
                Err(error) if Instant::now() >= deadline => {
                    return Err(Error::Kafka {
                        message: format!(
                            "no answer from {} within {timeout:?}: {error}",
                            self.brokers
                        ),
                        retryable: retryable(&error),
                    })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

/// A topic tidemark needs.
pub struct TopicSpec<'a> {
    pub name: &'a str,
    pub partitions: i32,
    pub replication_factor: i32,
    pub config: &'a [(&'a str, &'a str)],
}

/// Runs a future to completion on a thread of its own, so that blocking code may call
/// it whether or not it runs inside an async runtime.
fn block_on<F: Future + Send>(future: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime")
                    .block_on(future)
            })
            .join()
            .expect("the blocking thread does not panic")
    })
}

/// The client context of a consumer that asks to be told when it reaches a partition's
/// end: librdkafka reports that as an error, which is not one here.
#[derive(Default)]
struct EndAware;

impl rdkafka::ClientContext for EndAware {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        // It comes as `PartitionEOF` or as a global error with that code.
        let end = matches!(error, rdkafka::error::KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF);
        if !end {
            tracing::error!(%error, reason, "librdkafka");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for EndAware {}
