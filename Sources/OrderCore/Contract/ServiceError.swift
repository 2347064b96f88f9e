/// The contract's error codes (CONTRACT section 4). Fixed names: clients match on them.
public enum ErrorCode: String, Sendable, CaseIterable {
    case invalidRequest = "invalid_request"
    case unknownAction = "unknown_action"
    case invalidReplyTo = "invalid_reply_to"
    case forbidden
    case productNotFound = "product_not_found"
    case itemNotFound = "item_not_found"
    case cartEmpty = "cart_empty"
    case cartFull = "cart_full"
    case insufficientStock = "insufficient_stock"
    case orderNotFound = "order_not_found"
    case upstreamTimeout = "upstream_timeout"
    case internalError = "internal_error"

    /// Transient outcomes are not remembered for idempotency: a retry with the same request_id
    /// gets a fresh attempt instead of the stored failure.
    public var isTransient: Bool { self == .upstreamTimeout || self == .internalError }
}

/// A failure answered to the client. The message is for people and never carries SQL, stack
/// traces or connection details.
public struct ServiceError: Error, Sendable, Equatable {
    public var code: ErrorCode
    public var message: String
    /// Extra fields of the error object, e.g. `items` for insufficient_stock, `product_ids`.
    public var details: [(String, JSON)]

    public init(_ code: ErrorCode, _ message: String, details: [(String, JSON)] = []) {
        self.code = code
        self.message = message
        self.details = details
    }

    public static func == (a: ServiceError, b: ServiceError) -> Bool {
        a.code == b.code && a.message == b.message && JSON.object(a.details) == JSON.object(b.details)
    }

    public var json: JSON {
        .object([("code", .string(code.rawValue)), ("message", .string(message))] + details)
    }

    public static func invalid(_ message: String) -> ServiceError { ServiceError(.invalidRequest, message) }

    /// A line, cart or order total would pass `Money.max` (docs/contract.md, section 9.4).
    public static let overTotal = ServiceError(
        .invalidRequest, "a line, cart or order total may not exceed \(Money.max); nothing was changed")
}
