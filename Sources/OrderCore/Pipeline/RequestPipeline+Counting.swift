import Kafka

extension RequestPipeline {
    /// The action and outcome a record's answer is counted under, by the metrics and on its span.
    func counted(_ record: KafkaRecord, _ answered: Answered) -> (action: String, outcome: String) {
        let action = record.topic == topics.deductionResults ? "deduction_result" : answered.outcome?.metricsAction ?? "malformed"
        return (action, answered.outcome?.metricsOutcome ?? "none")
    }
}
