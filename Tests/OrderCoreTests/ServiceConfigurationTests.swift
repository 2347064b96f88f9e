import Testing

@testable import OrderCore

@Suite(.timeLimit(.minutes(1))) struct ServiceConfigurationTests {
    @Test func defaultsWhenNothingIsSet() throws {
        let c = try ServiceConfiguration.fromEnvironment([:])
        #expect(c.productCacheStaleness == .zero)
        #expect(c.productCoalesceWindow == .milliseconds(1))
        #expect(c.deliveryReportInterval == .milliseconds(5))
        #expect(c.cartBatchWindow == .milliseconds(3))
        #expect(c.maxInFlight == 2_000)
        #expect(c.kafka.properties.isEmpty)
    }

    @Test func productLookupKnobsAreRead() throws {
        let c = try ServiceConfiguration.fromEnvironment([
            "ORDER_SERVICE_PRODUCT_CACHE_MS": "250", "ORDER_SERVICE_PRODUCT_COALESCE_MS": "0",
            "ORDER_SERVICE_DELIVERY_REPORT_INTERVAL_MS": "0",
        ])
        #expect(c.deliveryReportInterval == .zero)
        #expect(throws: (any Error).self) { try ServiceConfiguration.fromEnvironment(["ORDER_SERVICE_DELIVERY_REPORT_INTERVAL_MS": "101"]) }
        #expect(c.productCacheStaleness == .milliseconds(250))
        #expect(c.productCoalesceWindow == .zero)
    }

    @Test func theCartBatchWindowIsRead() throws {
        #expect(try ServiceConfiguration.fromEnvironment(["ORDER_SERVICE_CART_BATCH_WINDOW_MS": "0"]).cartBatchWindow == .zero)
        #expect(try ServiceConfiguration.fromEnvironment(["ORDER_SERVICE_CART_BATCH_WINDOW_MS": "10"]).cartBatchWindow == .milliseconds(10))
        #expect(throws: (any Error).self) { try ServiceConfiguration.fromEnvironment(["ORDER_SERVICE_CART_BATCH_WINDOW_MS": "101"]) }
    }

    @Test(arguments: [
        "ORDER_SERVICE_PRODUCT_COALESCE_MS", "ORDER_SERVICE_PRODUCT_CACHE_MS", "ORDER_SERVICE_MAX_IN_FLIGHT",
        "ORDER_SERVICE_DELIVERY_REPORT_INTERVAL_MS", "ORDER_SERVICE_CART_BATCH_WINDOW_MS",
    ])
    func badNumbersAreRefused(name: String) {
        #expect(throws: (any Error).self) { try ServiceConfiguration.fromEnvironment([name: "-1"]) }
        #expect(throws: (any Error).self) { try ServiceConfiguration.fromEnvironment([name: "soon"]) }
    }

    @Test func crashLoopBreakerKnobsAndTheTestSwitchAreRead() throws {
        let d = try ServiceConfiguration.fromEnvironment([:])
        #expect(d.probationRecords == 2_000)
        #expect(d.probationWindow == .seconds(300))
        #expect(d.probationCrashes == 2)
        #expect(d.testCrashOn == nil)
        let c = try ServiceConfiguration.fromEnvironment([
            "ORDER_SERVICE_PROBATION_RECORDS": "0", "ORDER_SERVICE_PROBATION_WINDOW_S": "60",
            "ORDER_SERVICE_PROBATION_CRASHES": "1", "ORDER_SERVICE_TEST_CRASH_ON": "boom",
        ])
        #expect(c.probationRecords == 0)
        #expect(c.probationWindow == .seconds(60))
        #expect(c.probationCrashes == 1)
        #expect(c.testCrashOn == "boom")
        #expect(try ServiceConfiguration.fromEnvironment(["ORDER_SERVICE_TEST_CRASH_ON": ""]).testCrashOn == nil)
        #expect(throws: (any Error).self) { try ServiceConfiguration.fromEnvironment(["ORDER_SERVICE_PROBATION_CRASHES": "0"]) }
    }

    @Test func progressBoundAndTheWedgeSwitchAreRead() throws {
        let d = try ServiceConfiguration.fromEnvironment([:])
        #expect(d.progressBound == .seconds(120))
        #expect(d.testWedgeOn == nil)
        let c = try ServiceConfiguration.fromEnvironment(["ORDER_SERVICE_PROGRESS_BOUND_S": "7", "ORDER_SERVICE_TEST_WEDGE_ON": "stuck"])
        #expect(c.progressBound == .seconds(7))
        #expect(c.testWedgeOn == "stuck")
        #expect(try ServiceConfiguration.fromEnvironment(["ORDER_SERVICE_TEST_WEDGE_ON": ""]).testWedgeOn == nil)
        #expect(throws: (any Error).self) { try ServiceConfiguration.fromEnvironment(["ORDER_SERVICE_PROGRESS_BOUND_S": "0"]) }
    }

    @Test func applicationNameNamesTheRunWithinPostgresLimits() throws {
        var c = try ServiceConfiguration.fromEnvironment(["ORDER_SERVICE_INSTANCE_ID": "pod-7"])
        #expect(c.applicationName == "order-service/pod-7/\(c.runId)")
        #expect(c.runId.utf8.count == 8)
        #expect(c.postgres.applicationName == c.applicationName)
        c.instanceId = String(repeating: "é", count: 80)
        #expect(c.applicationName.utf8.count <= 63)
        #expect(c.applicationName.hasSuffix("/\(c.runId)"))
        #expect(c.applicationName.utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7F })
        #expect(try ServiceConfiguration.fromEnvironment([:]).runId != c.runId)
    }

    @Test func kafkaVariablesBecomeLibrdkafkaProperties() throws {
        let c = try ServiceConfiguration.fromEnvironment([
            "KAFKA_BOOTSTRAP_SERVERS": "broker:9092", "KAFKA_FETCH_WAIT_MAX_MS": "20", "KAFKA_HEAP_OPTS": "-Xmx1g",
        ])
        #expect(c.bootstrapServers == "broker:9092")
        #expect(c.kafka.properties == ["fetch.wait.max.ms": "20"])
    }
}
