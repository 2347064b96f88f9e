import CRdKafka
import Foundation

extension KafkaRecord {
    /// Copies everything out of a librdkafka message (which the caller then destroys).
    init(copying msg: UnsafeMutablePointer<rd_kafka_message_t>) {
        let m = msg.pointee
        let topic = m.rkt.map { String(cString: rd_kafka_topic_name($0)) } ?? ""
        let key = m.key.map { Array(UnsafeRawBufferPointer(start: $0, count: m.key_len)) }
        let value = m.payload.map { Array(UnsafeRawBufferPointer(start: $0, count: m.len)) }
        var headers: [KafkaHeader] = []
        var hdrs: OpaquePointer?
        if rd_kafka_message_headers(msg, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR, let hdrs {
            var idx = 0
            var name: UnsafePointer<CChar>?
            var val: UnsafeRawPointer?
            var size = 0
            while rd_kafka_header_get_all(hdrs, idx, &name, &val, &size) == RD_KAFKA_RESP_ERR_NO_ERROR {
                // Header names are meant to be UTF-8; a bad one is decoded with replacement, not dropped.
                let key = name.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: strlen($0)), as: UTF8.self) } ?? ""
                headers.append(KafkaHeader(key: key, value: val.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) }))
                idx += 1
            }
        }
        var tsType = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
        let ts = rd_kafka_message_timestamp(msg, &tsType)
        self.init(
            topic: topic, partition: m.partition, offset: m.offset, key: key, value: value, headers: headers,
            timestampMs: tsType == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? nil : ts,
            timestampType: tsType == RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME ? .logAppendTime : tsType == RD_KAFKA_TIMESTAMP_CREATE_TIME ? .createTime : KafkaRecord.TimestampType.none)
    }
}
