import Kafka
import Testing

@testable import OrderCore

/// A client's `tracestate` travels on every record its request causes: cut to W3C's limits.
@Suite("Trace headers read from records")
struct KafkaHeaderExtractorTests {
    let extractor = KafkaHeaderExtractor()

    @Test func anOrdinaryTraceStateIsReadAsItIs() {
        let headers = [KafkaHeader("tracestate", "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7"), KafkaHeader("traceparent", "tp")]
        #expect(extractor.extract(key: "tracestate", from: headers) == "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
        #expect(extractor.extract(key: "traceparent", from: headers) == "tp")
    }

    @Test func aHugeTraceStateIsCutToThirtyTwoMembersAndFiveHundredTwelveBytes() throws {
        let many = (0..<10_000).map { "k\($0)=v" }.joined(separator: ",")
        let cut = try #require(extractor.extract(key: "tracestate", from: [KafkaHeader("tracestate", many)]))
        #expect(cut.split(separator: ",").count == 32)
        #expect(cut.hasPrefix("k0=v,k1=v"))
        // Long members go first, then members from the end, until it fits.
        let long = "big=" + String(repeating: "x", count: 200)
        let mixed = ([long] + (0..<100).map { "m\($0)=" + String(repeating: "y", count: 20) }).joined(separator: ",")
        let fitted = try #require(extractor.extract(key: "tracestate", from: [KafkaHeader("tracestate", mixed)]))
        #expect(fitted.utf8.count <= 512)
        #expect(!fitted.contains("big="))
        #expect(fitted.hasPrefix("m0="))
        // One member larger than the limit leaves nothing.
        #expect(extractor.extract(key: "tracestate", from: [KafkaHeader("tracestate", String(repeating: "z", count: 990_000))]) == nil)
    }
}
