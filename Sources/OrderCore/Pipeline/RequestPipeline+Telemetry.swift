import Kafka

extension RequestPipeline {
    /// The record's span learns the action and outcome its reply says (as the metrics record does).
    func noteOutcome(_ record: KafkaRecord, _ outputs: [KafkaOutgoingRecord]) {
        let reply = outputs.first { $0.topic != topics.deadLetters }
        let action = record.topic == topics.deductionResults
            ? "deduction_result" : reply.flatMap { $0.value }.map(ServiceMetrics.action(ofReply:)) ?? "malformed"
        Spans.noteOutcome(action: action, outcome: reply.flatMap { $0.value }.map(ServiceMetrics.outcome(ofReply:)) ?? "none")
    }
}
