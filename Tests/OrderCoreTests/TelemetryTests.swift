import Foundation
import Kafka
import OrderCore
import OrderTelemetry
import Testing
import TestSupport
import Tracing

@Suite("Telemetry")
struct TelemetryTests {
    @Test("consumer span attributes follow the Kafka messaging conventions")
    func consumerAttributes() {
        let record = KafkaRecord(
            topic: "cart_requests", partition: 3, offset: 42, key: Array("17".utf8), value: Array("{}".utf8),
            headers: [KafkaHeader("correlation-id", "c-1")])
        let a = MessagingAttributes.consumer(record, group: "order-service")
        #expect(a["messaging.system"]?.toSpanAttribute() == .string("kafka"))
        #expect(a["messaging.operation.type"]?.toSpanAttribute() == .string("process"))
        #expect(a["messaging.destination.name"]?.toSpanAttribute() == .string("cart_requests"))
        #expect(a["messaging.destination.partition.id"]?.toSpanAttribute() == .string("3"))
        #expect(a["messaging.kafka.offset"]?.toSpanAttribute() == .int64(42))
        #expect(a["messaging.consumer.group.name"]?.toSpanAttribute() == .string("order-service"))
        #expect(a["messaging.kafka.message.key"]?.toSpanAttribute() == .string("17"))
        #expect(a["messaging.message.conversation_id"]?.toSpanAttribute() == .string("c-1"))
        #expect(a["messaging.message.body.size"]?.toSpanAttribute() == .int64(2))
    }

    @Test("a key that is not UTF-8 is left out; no group, no group attribute")
    func binaryKey() {
        let record = KafkaRecord(topic: "t", partition: 0, offset: 0, key: [0xFF, 0xFE], value: nil, headers: [])
        let a = MessagingAttributes.consumer(record, group: nil)
        #expect(a["messaging.kafka.message.key"] == nil)
        #expect(a["messaging.consumer.group.name"] == nil)
        #expect(a["messaging.message.body.size"]?.toSpanAttribute() == .int64(0))
    }

    @Test("producer attributes, outcome and error type, database attributes")
    func otherAttributes() {
        let p = MessagingAttributes.producer(KafkaOutgoingRecord(topic: "cart_responses", partition: 1, key: Array("5".utf8), value: [1, 2, 3], headers: []))
        #expect(p["messaging.operation.type"]?.toSpanAttribute() == .string("send"))
        #expect(p["messaging.destination.name"]?.toSpanAttribute() == .string("cart_responses"))
        #expect(p["messaging.destination.partition.id"]?.toSpanAttribute() == .string("1"))
        let ok = MessagingAttributes.outcome(action: "add_item", outcome: "ok")
        #expect(ok["order_service.action"]?.toSpanAttribute() == .string("add_item"))
        #expect(ok["error.type"] == nil)
        let failed = MessagingAttributes.outcome(action: "create_order", outcome: "insufficient_stock")
        #expect(failed["error.type"]?.toSpanAttribute() == .string("insufficient_stock"))
        let db = MessagingAttributes.database(operation: "batch", batchSize: 7)
        #expect(db["db.system.name"]?.toSpanAttribute() == .string("postgresql"))
        #expect(db["db.operation.batch.size"]?.toSpanAttribute() == .int64(7))
    }

    @Test("no endpoint, or OTEL_SDK_DISABLED=true: nothing is exported")
    func nothingWithoutEndpoint() {
        #expect(OTelEnvironment([:]).traces == false)
        #expect(OTelEnvironment(["OTEL_SERVICE_NAME": "x"]).metrics == false)
        let disabled = OTelEnvironment(["OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"])
        #expect(!disabled.traces && !disabled.metrics)
        #expect(OTelEnvironment(["OTEL_EXPORTER_OTLP_ENDPOINT": " "]).traces == false)
    }

    @Test("endpoints per signal, exporters set to none, and grpc falling back to http/protobuf")
    func signals() {
        let both = OTelEnvironment(["OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"])
        #expect(both.traces && both.metrics && both.warnings.isEmpty)
        #expect(both.variables["OTEL_LOGS_EXPORTER"] == "none")
        let traces = OTelEnvironment(["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"])
        #expect(traces.traces && !traces.metrics)
        let noMetrics = OTelEnvironment(["OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_METRICS_EXPORTER": "none"])
        #expect(noMetrics.traces && !noMetrics.metrics)
        let grpc = OTelEnvironment(["OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"])
        #expect(grpc.traces && grpc.variables["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf" && grpc.warnings.count == 1)
        let zipkin = OTelEnvironment(["OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "zipkin"])
        #expect(zipkin.traces && zipkin.variables["OTEL_TRACES_EXPORTER"] == "otlp" && zipkin.warnings.count == 1)
    }

    @Test("tracing off: no span, the old random-child traceparent on outgoing records")
    func offKeepsOldPropagation() async {
        #expect(!Telemetry.isTracing)
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        let headers = TraceContext.$traceparent.withValue(parent) { TraceContext.outgoingHeaders }
        #expect(headers.count == 1 && headers[0].stringValue?.hasPrefix("00-4bf92f3577b34da6a3ce929d0e0e4736-") == true)
        #expect(Spans.currentHeaders == nil && Spans.currentContext == nil)
    }

    @Test("the protobuf reader used by the OTLP receiver reads varints, strings and nested messages")
    func protobufReader() {
        // field 1: string "ab"; field 6: varint 300; field 2: message { field 1: "x" }
        let bytes: [UInt8] = [0x0A, 2, 0x61, 0x62, 0x30, 0xAC, 0x02, 0x12, 3, 0x0A, 1, 0x78]
        #expect(ProtobufReader.string(bytes, 1) == "ab")
        #expect(ProtobufReader.varint(bytes, 6) == 300)
        #expect(ProtobufReader.messages(bytes, 2).first.flatMap { ProtobufReader.string($0, 1) } == "x")
        #expect(ProtobufReader.fields([0x0A, 5, 1]) == nil)
    }
}

extension TelemetryTests {
    @Test("OTEL_SDK_DISABLED is decided here and not handed on (swift-otel would re-enable logs for false)")
    func sdkDisabledNotPassedOn() {
        let env = OTelEnvironment(["OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "false"])
        #expect(env.traces && env.metrics && env.variables["OTEL_SDK_DISABLED"] == nil)
    }
}

extension TelemetryTests {
    @Test("every exported metric is listed in README's Observability section, with its unit")
    func readmeListsTheMetrics() throws {
        let readme = try String(
            contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../README.md"), encoding: .utf8)
        for (name, unit) in Instruments.names {
            let row = readme.split(separator: "\n").first { $0.hasPrefix("| `\(name)` |") }
            #expect(row?.contains(unit.hasPrefix("{") ? unit : ", \(unit)") == true, "\(name) (\(unit)) not in README")
        }
    }
}
