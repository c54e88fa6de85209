mod kafka_log;
mod log;
mod payments;
