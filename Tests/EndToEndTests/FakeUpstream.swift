import Foundation
import Kafka
import OrderCore
import Synchronization
import TestSupport

/// A scriptable stand-in for the Product and Inventory services (contract section 7): reads the
/// system's `get_product_details` and `inventory_check` topics from their beginning and answers
/// each request with whatever `script` returns for it — any bytes, any number of answers, late,
/// with a wrong correlation id — on the request's `reply-to` topic, with the request's key.
final class FakeUpstream: Sendable {
    enum Service: String, Sendable { case product, inventory }

    /// One request the order service sent upstream.
    struct Request: Sendable {
        let service: Service
        let record: KafkaRecord
        /// The `correlation-id` header (equal to the body's `request_id`).
        let correlationId: String?
        let body: JSON?
        /// `product_ids` of a product request, the `product_id`s of an inventory request's items.
        var productIds: [Int64] {
            switch service {
            case .product: (body?["product_ids"]?.array ?? []).compactMap(\.int)
            case .inventory: (body?["items"]?.array ?? []).compactMap { $0["product_id"]?.int }
            }
        }
        /// The quantity an inventory request asks for a product.
        func quantity(of product: Int64) -> Int64? {
            (body?["items"]?.array ?? []).first { $0["product_id"]?.int == product }?["quantity"]?.int
        }
        /// The body's `request_id` as a JSON text fragment (`"id"`, or `null`).
        var requestIdJSON: String { JSON.optional(body?["request_id"]?.string).text }
    }

    /// One answer record.
    struct Answer: Sendable {
        var value: [UInt8]?
        /// The `correlation-id` header: `.request` copies the request's; `.none` leaves it out.
        var correlation: Correlation = .request
        /// Sent this long after the request was seen (answers of one request go out in order).
        var delay: Duration = .zero

        enum Correlation: Sendable, Equatable {
            case request
            case none
            case other(String)
        }

        init(value: [UInt8]?, correlation: Correlation = .request, delay: Duration = .zero) {
            self.value = value
            self.correlation = correlation
            self.delay = delay
        }

        init(_ text: String, correlation: Correlation = .request, delay: Duration = .zero) {
            self.init(value: Array(text.utf8), correlation: correlation, delay: delay)
        }
    }

    private let consumer: KafkaConsumer
    private let producer: KafkaProducer
    private let reader = Mutex<Task<Void, Never>?>(nil)
    private let answering = Mutex<[Task<Void, Never>]>([])
    private let seen = Mutex<[Request]>([])
    private let failures = Mutex<[String]>([])

    /// Starts answering; `script` chooses the answers of each request (none: the request stays
    /// unanswered). Call `stop()` on every path.
    init(_ system: TestSystem, script: @escaping @Sendable (Request) -> [Answer]) throws {
        let config = KafkaConfiguration(["bootstrap.servers": system.bootstrapServers])
        producer = try KafkaProducer(configuration: config, logger: system.logger)
        do {
            consumer = try KafkaConsumer(configuration: config, logger: system.logger)
            let requestTopics = [system.topics.productRequests: Service.product, system.topics.inventoryCheckRequests: .inventory]
            var start: [TopicPartition: KafkaOffset] = [:]
            for topic in requestTopics.keys {
                let partitions = system.topics.entries.values.first { $0.name == topic }?.spec.partitions ?? 1
                for p in 0..<partitions { start[TopicPartition(topic, p)] = KafkaOffset.beginning }
            }
            try consumer.assign(start)
        } catch {
            Task { [producer] in await producer.close() }
            throw error
        }
        let replyTopics = [Service.product: system.topics.productReplies, .inventory: system.topics.inventoryCheckReplies]
        let task = Task { [self, consumer, producer] in
            for await record in consumer.records {
                let service: Service = record.topic == system.topics.productRequests ? .product : .inventory
                let request = Request(
                    service: service, record: record, correlationId: record.header("correlation-id")?.stringValue,
                    body: record.value.flatMap { try? JSON.parse($0) })
                seen.withLock { $0.append(request) }
                let answers = script(request)
                guard !answers.isEmpty else { continue }
                let topic = record.header("reply-to")?.stringValue ?? replyTopics[service] ?? ""
                let send = Task { [self] in
                    let started = ContinuousClock.now
                    for answer in answers {
                        if answer.delay > .zero { try? await Task.sleep(until: started + answer.delay) }
                        var headers = [KafkaHeader("content-type", "application/json")]
                        switch answer.correlation {
                        case .request: if let c = request.correlationId { headers.append(KafkaHeader("correlation-id", c)) }
                        case .none: break
                        case .other(let c): headers.append(KafkaHeader("correlation-id", c))
                        }
                        do {
                            _ = try await producer.send(KafkaOutgoingRecord(topic: topic, key: record.key, value: answer.value, headers: headers))
                        } catch {
                            failures.withLock { $0.append("answer to \(request.correlationId ?? "?") (\(answer.value?.count ?? 0) bytes) failed: \(error)") }
                        }
                    }
                }
                answering.withLock { $0.append(send) }
            }
        }
        reader.withLock { $0 = task }
    }

    /// Every request seen so far.
    var requests: [Request] { seen.withLock { $0 } }
    /// Answers the broker refused (a test expects none).
    var sendFailures: [String] { failures.withLock { $0 } }

    /// Waits for scheduled answers, then stops reading and closes both clients.
    func stop() async {
        for t in answering.withLock({ $0 }) { await t.value }
        await consumer.close()
        await reader.withLock { $0 }?.value
        await producer.close()
    }
}

