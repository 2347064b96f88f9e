import Testing

@testable import OrderCore

@Suite struct ServiceConfigurationTests {
    @Test func defaultsWhenNothingIsSet() throws {
        let c = try ServiceConfiguration.fromEnvironment([:])
        #expect(c.productCacheStaleness == .zero)
        #expect(c.productCoalesceWindow == .milliseconds(1))
        #expect(c.maxInFlight == 2_000)
        #expect(c.kafka.properties.isEmpty)
    }

    @Test func productLookupKnobsAreRead() throws {
        let c = try ServiceConfiguration.fromEnvironment([
            "ORDER_SERVICE_PRODUCT_CACHE_MS": "250", "ORDER_SERVICE_PRODUCT_COALESCE_MS": "0",
        ])
        #expect(c.productCacheStaleness == .milliseconds(250))
        #expect(c.productCoalesceWindow == .zero)
    }

    @Test(arguments: ["ORDER_SERVICE_PRODUCT_COALESCE_MS", "ORDER_SERVICE_PRODUCT_CACHE_MS", "ORDER_SERVICE_MAX_IN_FLIGHT"])
    func badNumbersAreRefused(name: String) {
        #expect(throws: (any Error).self) { try ServiceConfiguration.fromEnvironment([name: "-1"]) }
        #expect(throws: (any Error).self) { try ServiceConfiguration.fromEnvironment([name: "soon"]) }
    }

    @Test func kafkaVariablesBecomeLibrdkafkaProperties() throws {
        let c = try ServiceConfiguration.fromEnvironment([
            "KAFKA_BOOTSTRAP_SERVERS": "broker:9092", "KAFKA_FETCH_WAIT_MAX_MS": "20", "KAFKA_HEAP_OPTS": "-Xmx1g",
        ])
        #expect(c.bootstrapServers == "broker:9092")
        #expect(c.kafka.properties == ["fetch.wait.max.ms": "20"])
    }
}
