import Kafka
import Tracing

/// Span attributes after the OpenTelemetry messaging (Kafka) and database conventions. Pure
/// functions of the record, so that the mapping is unit-tested without a tracer.
public enum MessagingAttributes {
    /// A consumer (`process`) span's attributes for a record read by `group`.
    public static func consumer(_ record: KafkaRecord, group: String?) -> SpanAttributes {
        var a = SpanAttributes()
        a["messaging.system"] = "kafka"
        a["messaging.operation.type"] = "process"
        a["messaging.operation.name"] = "process"
        a["messaging.destination.name"] = record.topic
        a["messaging.destination.partition.id"] = "\(record.partition)"
        a["messaging.kafka.offset"] = Int(record.offset)
        if let group { a["messaging.consumer.group.name"] = group }
        if let key = record.key, let s = String(validating: key, as: UTF8.self) { a["messaging.kafka.message.key"] = s }
        if let id = record.header("correlation-id")?.stringValue { a["messaging.message.conversation_id"] = id }
        a["messaging.message.body.size"] = record.value?.count ?? 0
        return a
    }

    /// A producer (`send`) span's attributes for an outgoing record.
    public static func producer(_ record: KafkaOutgoingRecord) -> SpanAttributes {
        var a = SpanAttributes()
        a["messaging.system"] = "kafka"
        a["messaging.operation.type"] = "send"
        a["messaging.operation.name"] = "send"
        a["messaging.destination.name"] = record.topic
        if let p = record.partition { a["messaging.destination.partition.id"] = "\(p)" }
        if let key = record.key, let s = String(validating: key, as: UTF8.self) { a["messaging.kafka.message.key"] = s }
        if let id = record.headers.last(where: { $0.key == "correlation-id" })?.stringValue { a["messaging.message.conversation_id"] = id }
        a["messaging.message.body.size"] = record.value?.count ?? 0
        return a
    }

    /// What a request's reply says: its action and outcome; an error outcome is also the span's `error.type`.
    public static func outcome(action: String, outcome: String) -> SpanAttributes {
        var a = SpanAttributes()
        a["order_service.action"] = action
        a["order_service.outcome"] = outcome
        if outcome != "ok" && outcome != "none" { a["error.type"] = outcome }
        return a
    }

    /// A database transaction (or group-commit batch) span.
    public static func database(operation: String, batchSize: Int? = nil) -> SpanAttributes {
        var a = SpanAttributes()
        a["db.system.name"] = "postgresql"
        a["db.operation.name"] = operation
        if let batchSize { a["db.operation.batch.size"] = batchSize }
        return a
    }
}
