/// Spans and metrics decoded from OTLP/HTTP protobuf exports (the fields tests check).
public struct ExportedSpan: Sendable, CustomStringConvertible {
    public enum Kind: Int, Sendable { case unspecified = 0, `internal`, server, client, producer, consumer }
    public var traceId: String
    public var spanId: String
    public var parentSpanId: String
    public var name: String
    public var kind: Kind
    public var attributes: [String: String]
    /// (trace id, span id) of each link.
    public var links: [(traceId: String, spanId: String)]
    /// 0 unset, 1 ok, 2 error.
    public var statusCode: Int
    public var statusMessage: String
    public var resource: [String: String]

    public var description: String {
        "\(name) [\(kind)] \(traceId)/\(spanId) parent \(parentSpanId.isEmpty ? "-" : parentSpanId) \(attributes.sorted { $0.key < $1.key })"
    }
}

public struct ExportedMetric: Sendable {
    public var name: String
    public var unit: String
    public var resource: [String: String]
}

public enum OTLPDecoder {
    static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { b in
            let s = String(b, radix: 16)
            return s.count == 1 ? "0" + s : s
        }.joined()
    }

    /// KeyValue list → strings (ints and bools as text).
    static func attributes(_ kvs: [[UInt8]]) -> [String: String] {
        var out: [String: String] = [:]
        for kv in kvs {
            guard let key = ProtobufReader.string(kv, 1) else { continue }
            let any = ProtobufReader.messages(kv, 2).last ?? []
            var value = ""
            for f in ProtobufReader.fields(any) ?? [] {
                switch (f.number, f.value) {
                case (1, .bytes(let b)): value = String(decoding: b, as: UTF8.self)
                case (2, .varint(let v)): value = v == 0 ? "false" : "true"
                case (3, .varint(let v)): value = "\(Int64(bitPattern: v))"
                case (4, .fixed64(let v)): value = "\(Double(bitPattern: v))"
                default: break
                }
            }
            out[key] = value
        }
        return out
    }

    static func resource(_ bytes: [UInt8]) -> [String: String] {
        attributes(ProtobufReader.messages(ProtobufReader.messages(bytes, 1).last ?? [], 1))
    }

    /// ExportTraceServiceRequest → spans.
    public static func spans(_ request: [UInt8]) -> [ExportedSpan] {
        var out: [ExportedSpan] = []
        for rs in ProtobufReader.messages(request, 1) {
            let res = resource(rs)
            for ss in ProtobufReader.messages(rs, 2) {
                for s in ProtobufReader.messages(ss, 2) {
                    let status = ProtobufReader.messages(s, 15).last ?? []
                    out.append(ExportedSpan(
                        traceId: hex(ProtobufReader.messages(s, 1).last ?? []), spanId: hex(ProtobufReader.messages(s, 2).last ?? []),
                        parentSpanId: hex(ProtobufReader.messages(s, 4).last ?? []), name: ProtobufReader.string(s, 5) ?? "",
                        kind: ExportedSpan.Kind(rawValue: Int(ProtobufReader.varint(s, 6) ?? 0)) ?? .unspecified,
                        attributes: attributes(ProtobufReader.messages(s, 9)),
                        links: ProtobufReader.messages(s, 13).map { (hex(ProtobufReader.messages($0, 1).last ?? []), hex(ProtobufReader.messages($0, 2).last ?? [])) },
                        statusCode: Int(ProtobufReader.varint(status, 3) ?? 0), statusMessage: ProtobufReader.string(status, 2) ?? "",
                        resource: res))
                }
            }
        }
        return out
    }

    /// ExportMetricsServiceRequest → metric names and units.
    public static func metrics(_ request: [UInt8]) -> [ExportedMetric] {
        var out: [ExportedMetric] = []
        for rm in ProtobufReader.messages(request, 1) {
            let res = resource(rm)
            for sm in ProtobufReader.messages(rm, 2) {
                for m in ProtobufReader.messages(sm, 2) {
                    out.append(ExportedMetric(name: ProtobufReader.string(m, 1) ?? "", unit: ProtobufReader.string(m, 3) ?? "", resource: res))
                }
            }
        }
        return out
    }
}
