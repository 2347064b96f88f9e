import Foundation
import Kafka
import OrderCore
import Postgres
import Testing
import TestSupport

extension ReliabilityTests {
    /// Issue scenario 4, "Broker trouble": the real executables against librdkafka's in-process
    /// mock cluster (three brokers, real TCP listeners on 127.0.0.1) and the real PostgreSQL.
    /// Nested in the serialized reliability suite, so it never runs beside the other heavy tests.
    @Suite("Broker trouble (mock cluster)")
    struct BrokerFaultTests {
        static let produceApiKey: Int16 = 0
        static let offsetCommitApiKey: Int16 = 8
        /// Broker roles, pinned so a fault hits exactly what it should: broker 1 leads the request
        /// topics, broker 2 the response topics, broker 3 everything else (upstream, events, DLQ,
        /// metrics) and coordinates every consumer group.
        static let requestLeader: Int32 = 1
        static let responseLeader: Int32 = 2
        static let otherLeader: Int32 = 3

        @Test(
            "broker trouble: produce and commit errors, leaders down and up, high RTT, SIGKILL while replies cannot be delivered; every request answered once, nothing lost or doubled",
            .timeLimit(.minutes(3)))
        func brokerTrouble() async throws {
            let cluster = try KafkaMockCluster(brokers: 3, logger: TestKafka.logger("mock-cluster", level: .critical))
            let system = try await TestSystem.start(
                "brokers",
                serviceEnvironment: [
                    // The mock cluster has no CreateTopics: the test creates every topic of topics.yaml.
                    "ORDER_SERVICE_CREATE_TOPICS": "false",
                    // Upstream round trips cross the slow brokers several times; an upstream_timeout
                    // (a transient, unstored answer) is not what this test is about.
                    "ORDER_SERVICE_UPSTREAM_TIMEOUT_MS": "30000",
                    // The mock skips the sequence check for idempotent (non-transactional) producers:
                    // when a pushed error fails one Produce request and a later pipelined one
                    // succeeds, librdkafka acks the failed batch implicitly (IMPLICITACK; a real
                    // broker would have refused the later batch as out of order) although the mock
                    // never stored it, a false loss. One request in flight per connection avoids it.
                    "KAFKA_MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION": "1",
                ],
                bootstrapServers: cluster.bootstrapServers,
                createTopics: { topics in
                    for e in topics.entries.values {
                        try cluster.createTopic(e.name, partitions: e.spec.partitions, replicationFactor: 3)
                        let leader = e.role == .request ? Self.requestLeader : e.role == .response ? Self.responseLeader : Self.otherLeader
                        for p in 0..<e.spec.partitions { try cluster.setPartitionLeader(topic: e.name, partition: p, broker: leader) }
                    }
                    // Every group of this system (prefix_group, prefix_product-service, …) on broker 3.
                    let prefix = String(topics.cartRequests.dropLast("_cart_requests".count))
                    for g in ["group", "product-service", "inventory-service"] {
                        try cluster.setGroupCoordinator(group: "\(prefix)_\(g)", broker: Self.otherLeader)
                    }
                })
            // A run takes about 70 s here; every wait in `run` is bounded and fails with a message,
            // and the 3-minute limit catches a hang (or a slow run) before those bounds add up.
            let outcome = await TestKafka.result { try await run(system, cluster) }
            await system.stop()
            withExtendedLifetime(cluster) {}  // the cluster lives until every process is gone
            try outcome.get()
        }

        private func run(_ system: TestSystem, _ cluster: KafkaMockCluster) async throws {
            let t0 = ContinuousClock.now
            let product = TestCatalog.uniqueProductId()
            try await TestCatalog.add(product, price: "1.25", stock: 1_000_000)
            let users = (0..<16).map { _ in TestCatalog.uniqueUserId() }
            let run = UUID().uuidString.prefix(8).lowercased()
            func id(_ u: Int64, _ round: Int) -> String { "bt-\(run)-\(u)-\(round)" }
            func quantity(_ i: Int, _ round: Int) -> Int64 { Int64(1 + (i + round) % 4) }
            let cartRequests = system.topics.name("cart_requests")
            /// One add_item per user, produced together (one user's records keep their order).
            func sendRound(_ round: Int) async throws -> [DeliveryReport] {
                try await system.producer.sendAll(
                    users.enumerated().map { i, u in
                        KafkaOutgoingRecord(
                            topic: cartRequests, key: Array(String(u).utf8), value: add(u, product, quantity(i, round), id: id(u, round)).bytes,
                            headers: [KafkaHeader("correlation-id", id(u, round))])
                    })
            }
            func ids(_ rounds: Range<Int>) -> Set<String> { Set(rounds.flatMap { r in users.map { id($0, r) } }) }
            func awaitReplies(_ rounds: Range<Int>, _ what: String) async throws -> Duration {
                let start = ContinuousClock.now
                let wanted = ids(rounds)
                let got = try await collectReplies(system, ids: wanted, timeout: .seconds(90))
                #expect(got.count == wanted.count, "\(what): unanswered \(wanted.subtracting(got.keys).sorted().prefix(5))")
                return ContinuousClock.now - start
            }
            let started = ContinuousClock.now - t0

            // 1. Retriable produce errors on the reply path (broker 2 leads only the response
            //    topics, so only the service's replies meet them) and OffsetCommit errors (every
            //    group's coordinator), under high round-trip times on all brokers.
            cluster.setRoundTripTime(broker: Self.requestLeader, milliseconds: 300)
            cluster.setRoundTripTime(broker: Self.responseLeader, milliseconds: 600)
            cluster.setRoundTripTime(broker: Self.otherLeader, milliseconds: 400)
            let produceErrors = [KafkaMockCluster.notEnoughReplicas, KafkaMockCluster.requestTimedOut, KafkaMockCluster.notLeaderForPartition]
            let commitErrors = [KafkaMockCluster.requestTimedOut, KafkaMockCluster.coordinatorNotAvailable, KafkaMockCluster.notCoordinator]
            cluster.pushRequestErrors(apiKey: Self.offsetCommitApiKey, errors: Array(Array(repeating: commitErrors, count: 6).joined()))
            _ = try await sendRound(0)
            cluster.pushRequestErrors(
                broker: Self.responseLeader, apiKey: Self.produceApiKey, errors: Array(Array(repeating: produceErrors, count: 3).joined()))
            _ = try await sendRound(1)
            let phase1 = try await awaitReplies(0..<2, "errors and RTT")
            #expect(cluster.pendingRequestErrors(broker: Self.responseLeader, apiKey: Self.produceApiKey) == 0, "the replies met every produce error")
            for b: Int32 in 1...3 { cluster.setRoundTripTime(broker: b, milliseconds: 0) }

            // 2. The leaders go down while requests are in flight: the response leader first (the
            //    replies of round 2 cannot be delivered), then the request leader too (round 3 is
            //    produced while it is down); both come back a few seconds later.
            let round2 = Task { try await sendRound(2) }
            try await Task.sleep(for: .milliseconds(150))
            cluster.setBrokerDown(Self.responseLeader)
            try await Task.sleep(for: .seconds(2))
            cluster.setBrokerDown(Self.requestLeader)
            let round3 = Task { try await sendRound(3) }
            try await Task.sleep(for: .seconds(3))
            cluster.setBrokerUp(Self.requestLeader)
            try await Task.sleep(for: .seconds(2))
            cluster.setBrokerUp(Self.responseLeader)
            _ = try await round2.value
            _ = try await round3.value
            let phase2 = try await awaitReplies(2..<4, "leaders down and up")

            // 3. Offsets never pass an unreplied record: with the response leader down, round 4 is
            //    handled (its effects and stored replies are in PostgreSQL) but cannot be answered.
            //    The committed offsets must stay at or before round 4; then SIGKILL, leader back, and
            //    a fresh instance in the same group must answer round 4 from the stored replies.
            cluster.setBrokerDown(Self.responseLeader)
            let reports = try await sendRound(4)
            var firstOffset: [Int32: Int64] = [:]
            for r in reports { firstOffset[r.partition] = min(firstOffset[r.partition] ?? .max, r.offset) }
            let pattern = "cart/%/bt-\(run)-%-4"
            try await TestKafka.eventually("round 4 handled in PostgreSQL", timeout: .seconds(30)) {
                try await TestDatabase.withClient(poolSize: 1) { db in
                    let n: Int64 = try await db.query("SELECT count(*) FROM processed_requests WHERE idempotency_key LIKE $1", [pattern]).rows[0].decode(0)
                    return n == Int64(users.count)
                }
            }
            // The service commits every 500 ms: the committed offsets reach the first unreplied
            // record of each partition (rounds 0–3 are answered) and must never pass it.
            var committed: [TopicPartition: Int64] = [:]
            let deadline = ContinuousClock.now + .seconds(6)
            repeat {
                try await Task.sleep(for: .milliseconds(500))
                committed = try await committedOffsets(system, partitions: Array(firstOffset.keys))
                for (p, first) in firstOffset {
                    let c = committed[TopicPartition(cartRequests, p)] ?? -1001
                    try #require(c <= first, "partition \(p): committed \(c), past the unreplied record at \(first)")
                }
            } while ContinuousClock.now < deadline
                && !firstOffset.allSatisfy({ committed[TopicPartition(cartRequests, $0.key)] == $0.value })
            for (p, first) in firstOffset {
                #expect(committed[TopicPartition(cartRequests, p)] == first, "partition \(p): answered records up to \(first) not committed")
            }
            print("BROKER-TROUBLE committed \(committed.sorted { $0.key.partition < $1.key.partition }.map { "\($0.key.partition):\($0.value)" }) first unreplied \(firstOffset.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" })")
            #expect(system.records(on: "cart_responses").allSatisfy { r in
                (try? JSON.parse(r.value ?? []))?["request_id"]?.string.map { ids(4..<5).contains($0) } != true
            }, "a round-4 reply got through although its leader is down")
            system.process("order-service")?.signal(SIGKILL)
            _ = await system.process("order-service")?.waitForExit(timeout: .seconds(5))
            cluster.setBrokerUp(Self.responseLeader)
            let restart = ContinuousClock.now
            try system.startProcess("order-service", as: "order-service-2")
            let phase3Replies = try await collectReplies(system, ids: ids(4..<5), timeout: .seconds(60))
            #expect(phase3Replies.count == users.count, "after restart: unanswered \(ids(4..<5).subtracting(phase3Replies.keys).sorted().prefix(5))")
            let phase3 = ContinuousClock.now - restart

            // Every request answered ok, repeats byte for byte identical, every cart exact.
            let all = try await collectReplies(system, ids: ids(0..<5), timeout: .seconds(10))
            #expect(all.count == users.count * 5)
            for (rid, values) in all {
                #expect(Set(values).count == 1, "different replies for \(rid)")
                let reply = try JSON.parse(values[0])
                #expect(reply["status"]?.string == "ok", "\(rid): \(reply.text)")
            }
            for (i, u) in users.enumerated() {
                let cart = try await system.request("cart_requests", ["action": "get_cart", "user_id": .int(u)], timeout: .seconds(30))
                let items = cart["cart"]?["items"]?.array ?? []
                #expect(items.count == 1, "user \(u): \(cart.text)")
                #expect(items.first?["quantity"]?.int == (0..<5).map { quantity(i, $0) }.reduce(0, +), "user \(u): \(cart.text)")
            }
            #expect(system.process("order-service-2")?.isRunning == true)
            print(
                "BROKER-TROUBLE started=\(started) errors+rtt=\(phase1) leaders-down=\(phase2) restart-after-kill=\(phase3) total=\(ContinuousClock.now - t0)"
            )
        }

        /// The committed offsets of the service's group, asked of the coordinator (not joining).
        private func committedOffsets(_ system: TestSystem, partitions: [Int32]) async throws -> [TopicPartition: Int64] {
            let reader = try KafkaConsumer(
                configuration: KafkaConfiguration(["bootstrap.servers": system.bootstrapServers, "group.id": system.groupId]),
                logger: TestKafka.logger(level: .critical))
            let topic = system.topics.name("cart_requests")
            let offsets = await TestKafka.result { try await reader.committed(partitions.map { TopicPartition(topic, $0) }, timeout: .seconds(10)) }
            await reader.close()
            return try offsets.get()
        }
    }
}
