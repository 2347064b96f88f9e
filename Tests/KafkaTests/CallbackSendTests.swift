import Foundation
import Kafka
import Synchronization
import Testing
import TestSupport

/// `KafkaProducer.send(_:onDelivery:)`: the handler runs on the producer's poll thread, after
/// librdkafka's callback returned, so it may send again (against the mock cluster).
@Suite("Callback sends", .timeLimit(.minutes(1)))
struct CallbackSendTests {
    let logger = TestKafka.logger(level: .critical)

    private func record(_ value: String) -> KafkaOutgoingRecord {
        KafkaOutgoingRecord(topic: "orders", key: Array("k".utf8), value: Array(value.utf8))
    }

    private func producer(_ cluster: KafkaMockCluster, _ extra: [String: String] = [:]) throws -> KafkaProducer {
        let base = ["bootstrap.servers": cluster.bootstrapServers]
        return try KafkaProducer(configuration: KafkaConfiguration(base.merging(extra) { _, new in new }), logger: logger)
    }

    /// Reports of a chain of sends, each sent from the previous one's handler.
    final class Chain: Sendable {
        let reports = Mutex<[(offset: Int64, thread: String)]>([])
        let finished = Mutex<CheckedContinuation<Result<Void, KafkaError>, Never>?>(nil)

        func send(_ producer: KafkaProducer, _ values: ArraySlice<String>) {
            guard let value = values.first else { return finish(.success(())) }
            producer.send(KafkaOutgoingRecord(topic: "orders", key: Array("k".utf8), value: Array(value.utf8))) { result in
                switch result {
                case .success(let report):
                    self.reports.withLock { $0.append((report.offset, Thread.current.name ?? "")) }
                    self.send(producer, values.dropFirst())
                case .failure(let error): self.finish(.failure(error))
                }
            }
        }

        func finish(_ result: Result<Void, KafkaError>) { finished.withLock { $0?.resume(returning: result); $0 = nil } }

        /// Sends `values` as a chain and returns its reports once the last one came (a failed send is an issue).
        static func run(_ producer: KafkaProducer, _ values: [String]) async throws -> [(offset: Int64, thread: String)] {
            let chain = Chain()
            let result = try await TestKafka.within(.seconds(20), "a chain of \(values.count) sends") {
                await withCheckedContinuation { c in
                    chain.finished.withLock { $0 = c }
                    chain.send(producer, values[...])
                }
            }
            if case .failure(let error) = result { Issue.record("a send failed: \(error)") }
            return chain.reports.withLock { $0 }
        }
    }

    @Test func handlersRunOnThePollThreadAndMaySendTheNextRecord() async throws {
        let cluster = try KafkaMockCluster(logger: logger)
        try cluster.createTopic("orders", partitions: 1)
        let producer = try producer(cluster)
        _ = try await producer.send(record("warm-up"))
        let reports = try await Chain.run(producer, ["a", "b", "c", "d", "e"])
        #expect(reports.map(\.offset) == Array(1...5))
        // The OS's name of the thread (15 bytes): the producer's poll thread.
        #expect(reports.allSatisfy { $0.thread.hasPrefix("kafka-producer") }, "\(reports.map(\.thread))")
        await producer.close()
    }

    @Test func pacedDeliveryReportsStillServeEveryReportOnceOnThePollThread() async throws {
        let cluster = try KafkaMockCluster(logger: logger)
        try cluster.createTopic("orders", partitions: 1)
        let producer = try KafkaProducer(
            configuration: KafkaConfiguration(["bootstrap.servers": cluster.bootstrapServers]), logger: logger,
            deliveryReportInterval: .milliseconds(5))
        _ = try await TestKafka.within(.seconds(20), "an awaited send") { try await producer.send(self.record("warm-up")) }
        let n = 200
        let outcomes = Mutex<[(offset: Int64?, thread: String)]>([])
        for i in 0..<n {
            producer.send(record("\(i)")) { result in
                outcomes.withLock { $0.append(((try? result.get())?.offset, Thread.current.name ?? "")) }
            }
        }
        try await TestKafka.eventually("every send reported") { outcomes.withLock { $0.count } >= n }
        let all = outcomes.withLock { $0 }
        #expect(all.count == n, "each report once")
        #expect(Set(all.compactMap(\.offset)) == Set(1...Int64(n)), "none failed, none lost")
        #expect(all.allSatisfy { $0.thread.hasPrefix("kafka-producer") })
        // A chain (each send from the previous one's handler) keeps going at the paced rhythm.
        let chained = try await Chain.run(producer, ["a", "b", "c", "d", "e"])
        #expect(chained.map(\.offset) == Array(Int64(n) + 1...Int64(n) + 5))
        await producer.close()
    }

    @Test func aFullQueueWaitsForRoomInsteadOfFailing() async throws {
        let cluster = try KafkaMockCluster(logger: logger)
        try cluster.createTopic("orders", partitions: 1)
        // Room for two records: the rest of the burst meets QUEUE_FULL until reports free it.
        let producer = try producer(cluster, ["queue.buffering.max.messages": "2", "linger.ms": "5"])
        _ = try await producer.send(record("warm-up"))
        let n = 30
        let outcomes = Mutex<[Result<DeliveryReport, KafkaError>]>([])
        for i in 0..<n {
            producer.send(record("\(i)")) { result in outcomes.withLock { $0.append(result) } }
        }
        try await TestKafka.eventually("every send reported") { outcomes.withLock { $0.count } == n }
        let all = outcomes.withLock { $0 }
        let offsets = all.compactMap { try? $0.get().offset }
        #expect(offsets.count == n, "no send failed: \(all.filter { (try? $0.get()) == nil })")
        #expect(Set(offsets) == Set(1...Int64(n)))
        await producer.close()
    }

    @Test func aSendAfterCloseFailsAtOnce() async throws {
        let cluster = try KafkaMockCluster(logger: logger)
        try cluster.createTopic("orders", partitions: 1)
        let producer = try producer(cluster)
        _ = try await producer.send(record("before"))
        await producer.close()
        let outcome = Mutex<Result<DeliveryReport, KafkaError>?>(nil)
        producer.send(record("after")) { result in outcome.withLock { $0 = result } }
        guard case .failure(let error)? = outcome.withLock({ $0 }) else {
            Issue.record("no failure reported at once: \(String(describing: outcome.withLock { $0 }))")
            return
        }
        #expect(error.code == KafkaError.destroyedCode)
    }
}
