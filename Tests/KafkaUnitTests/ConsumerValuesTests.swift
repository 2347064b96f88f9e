import Testing

@testable import Kafka

@Suite("Consumer values: mode, offsets, timeouts")
struct ConsumerValuesTests {
    @Test func theModeFollowsTheGroupId() {
        #expect(KafkaConsumer.Mode(configuration: KafkaConfiguration(["group.id": "g"])) == .group(id: "g"))
        #expect(KafkaConsumer.Mode(configuration: KafkaConfiguration([:])) == .assigned)
    }

    @Test func logicalOffsetsAreLibrdkafkasNumbers() {
        #expect(KafkaOffset.beginning.rawValue == -2)
        #expect(KafkaOffset.end.rawValue == -1)
        #expect(KafkaOffset.stored.rawValue == -1000)
        #expect(KafkaOffset.invalid.rawValue == -1001)
        #expect(KafkaOffset.beginning.isLogical && !KafkaOffset(0).isLogical)
        #expect("\(KafkaOffset.beginning)" == "beginning" && "\(KafkaOffset(42))" == "42")
    }

    @Test func timeoutsBecomeClampedMilliseconds() {
        #expect(Duration.seconds(5).rdKafkaMilliseconds == 5_000)
        #expect(Duration.milliseconds(1_500).rdKafkaMilliseconds == 1_500)
        #expect(Duration.microseconds(999).rdKafkaMilliseconds == 0)
        #expect(Duration.seconds(-3).rdKafkaMilliseconds == 0)
        #expect(Duration.seconds(Int64.max).rdKafkaMilliseconds == Int32.max)
        #expect(Duration.seconds(3_000_000).rdKafkaMilliseconds == Int32.max)
    }
}
