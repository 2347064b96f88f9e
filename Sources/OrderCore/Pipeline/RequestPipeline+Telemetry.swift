import Kafka

extension RequestPipeline {
    /// The record's span learns the action and outcome its reply says (as the metrics record does).
    func noteOutcome(_ record: KafkaRecord, _ answered: Answered) {
        let action = record.topic == topics.deductionResults ? "deduction_result" : answered.outcome?.metricsAction ?? "malformed"
        Spans.noteOutcome(action: action, outcome: answered.outcome?.metricsOutcome ?? "none")
    }
}
