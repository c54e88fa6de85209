//! Whether a retry can help after a Kafka error, decided from librdkafka's error, so
//! that callers decide from `Error::is_retryable` and never from messages.

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::Error;

pub(crate) fn kafka_error(error: KafkaError) -> Error {
    Error::Kafka {
        retryable: retryable(&error),
        message: error.to_string(),
    }
}

/// Whether the same operation can succeed later without anything being changed.
pub(crate) fn retryable(error: &KafkaError) -> bool {
    match error {
        // librdkafka knows best for the transactional API; a fatal one needs a new
        // producer, which the same operation does not get.
        KafkaError::Transaction(inner) => {
            inner.is_retriable() || (!inner.is_fatal() && retryable_code(inner.code()))
        }
        KafkaError::MessageConsumptionFatal(_) => false,
        // Carries a code that `rdkafka_error_code` does not return.
        KafkaError::AdminOp(code) => retryable_code(*code),
        // Nothing arrived yet: a later poll may bring it.
        KafkaError::NoMessageReceived | KafkaError::PartitionEOF(_) => true,
        other => other.rdkafka_error_code().is_some_and(retryable_code),
    }
}

/// Outages, moving leaders and coordinators, and full local queues pass; anything
/// else (configuration, authentication and authorisation, records too large, topics
/// that do not exist, fenced or failed producers) stays until someone changes it.
pub(crate) fn retryable_code(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        // The client's own: the broker is away or slow, or the local queue is full.
        BrokerTransportFailure
            | Resolve
            | MessageTimedOut
            | AllBrokersDown
            | OperationTimedOut
            | QueueFull
            | ISRInsufficient
            | NodeUpdate
            | WaitingForCoordinator
            | InProgress
            | PreviousInProgress
            | TimedOutQueue
            | WaitCache
            | Interrupted
            | Retry
            | AssignmentLost
            | DestroyBroker
            // The broker's: a leader, coordinator or replica moving or catching up, or busy.
            | LeaderNotAvailable
            | NotLeaderForPartition
            | RequestTimedOut
            | BrokerNotAvailable
            | ReplicaNotAvailable
            | NetworkException
            | CoordinatorLoadInProgress
            | CoordinatorNotAvailable
            | NotCoordinator
            | NotEnoughReplicas
            | NotEnoughReplicasAfterAppend
            | RebalanceInProgress
            | NotController
            | ConcurrentTransactions
            | KafkaStorageError
            | ReassignmentInProgress
            | FetchSessionIdNotFound
            | InvalidFetchSessionEpoch
            | FencedLeaderEpoch
            | UnknownLeaderEpoch
            | OffsetNotAvailable
            | PreferredLeaderNotAvailable
            | EligibleLeadersNotAvailable
            | UnstableOffsetCommit
            | ThrottlingQuotaExceeded
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use RDKafkaErrorCode::*;

    #[test]
    fn outages_are_retryable_and_refusals_are_not() {
        let passing = [
            KafkaError::MessageProduction(QueueFull),
            KafkaError::MessageProduction(MessageTimedOut),
            KafkaError::MessageProduction(NotLeaderForPartition),
            KafkaError::MessageProduction(NotEnoughReplicas),
            KafkaError::Global(AllBrokersDown),
            KafkaError::Global(BrokerTransportFailure),
            KafkaError::MetadataFetch(OperationTimedOut),
            KafkaError::MessageConsumption(LeaderNotAvailable),
            KafkaError::MessageConsumption(BrokerNotAvailable),
            KafkaError::ConsumerCommit(NotCoordinator),
            KafkaError::ConsumerCommit(CoordinatorNotAvailable),
            KafkaError::AdminOp(RequestTimedOut),
            KafkaError::Flush(OperationTimedOut),
            KafkaError::NoMessageReceived,
        ];
        for error in passing {
            assert!(kafka_error(error.clone()).is_retryable(), "{error:?}");
        }
        let lasting = [
            KafkaError::ClientCreation("bad ssl.ca.location".into()),
            KafkaError::Global(InvalidArgument),
            KafkaError::Global(Authentication),
            KafkaError::Global(SSL),
            KafkaError::Global(SaslAuthenticationFailed),
            KafkaError::MessageProduction(TopicAuthorizationFailed),
            KafkaError::ConsumerCommit(GroupAuthorizationFailed),
            KafkaError::AdminOp(ClusterAuthorizationFailed),
            KafkaError::MessageProduction(MessageSizeTooLarge),
            KafkaError::MessageProduction(InvalidTopic),
            KafkaError::MessageProduction(UnknownTopic),
            KafkaError::MessageConsumption(UnknownTopicOrPartition),
            KafkaError::AdminOp(InvalidConfig),
            KafkaError::MessageProduction(Fatal),
            KafkaError::MessageProduction(ProducerFenced),
            KafkaError::MessageProduction(InvalidProducerEpoch),
            KafkaError::MessageConsumptionFatal(RequestTimedOut),
        ];
        for error in lasting {
            assert!(!kafka_error(error.clone()).is_retryable(), "{error:?}");
        }
    }

    #[test]
    fn the_message_and_the_verdict_survive_a_duplicate() {
        let error = kafka_error(KafkaError::MessageProduction(MessageSizeTooLarge));
        let copy = error.duplicate();
        assert_eq!(copy.to_string(), error.to_string());
        assert!(copy.to_string().starts_with("kafka: "), "{copy}");
        assert!(!copy.is_retryable());
    }
}
