mod log;
mod payments;
