mod event_schemas;
mod history;
mod kafka_events;
mod kafka_log;
mod log;
mod payments;
