/// Stage 1: bytes → a validated `Request`, or the exact error to answer. Pure: no I/O.
///
/// Structural problems (not UTF-8, not JSON, not an object, a field of the wrong type or missing)
/// are marked for the dead-letter topic; out-of-range values and unknown actions are ordinary
/// client errors and are only answered.
public struct DecodeStage: Sendable {
    public enum Outcome: Sendable, Equatable {
        case request(Request)
        case rejected(requestId: String?, action: String?, error: ServiceError, deadLetter: Bool)
    }

    public let topic: RequestTopicKind

    public init(topic: RequestTopicKind) { self.topic = topic }

    public func decode(_ value: [UInt8]?) -> Outcome {
        guard let value else { return malformed("the record has no value; expected a JSON object") }
        guard String(validating: value, as: UTF8.self) != nil else { return malformed("the value is not valid UTF-8") }
        let json: JSON
        do { json = try JSON.parse(value) } catch { return malformed("the value is not valid JSON: \(error.description)") }
        guard case .object = json else { return malformed("the value must be a JSON object, not \(json.typeName)") }

        // The action as far as it can be read, echoed in a refusal of request_id too.
        var readableAction: String?
        if case .string(let a)? = json["action"], a.unicodeScalars.count <= Limits.maxRequestIdLength { readableAction = a }
        var requestId: String?
        switch json["request_id"] {
        case nil, .null?: requestId = nil
        case .string(let s)?:
            // Counted in Unicode scalars (code points): grapheme clusters have no size bound
            // ("a" plus any number of combining marks is one Character).
            guard s.unicodeScalars.count <= Limits.maxRequestIdLength else {
                return malformed("request_id must be at most \(Limits.maxRequestIdLength) characters", action: readableAction)
            }
            requestId = s
        case let other?: return malformed("request_id must be a string, not \(other.typeName)", action: readableAction)
        }

        guard let actionValue = json["action"] else {
            return .rejected(requestId: requestId, action: nil, error: .invalid("action is required"), deadLetter: true)
        }
        guard case .string(let action) = actionValue else {
            return .rejected(
                requestId: requestId, action: nil, error: .invalid("action must be a string, not \(actionValue.typeName)"),
                deadLetter: true)
        }
        guard topic.actions.contains(action) else {
            if action == "list_carts" {
                return .rejected(
                    requestId: requestId, action: action,
                    error: ServiceError(.forbidden, "list_carts is only served on the admin topic"), deadLetter: false)
            }
            let known = RequestTopicKind.allCases.contains { $0.actions.contains(action) }
            let message = known
                ? "action \(action) is not served on the \(topic.rawValue) request topic"
                : "unknown action '\(Substring(action.unicodeScalars.prefix(64)))'"
            // An absurdly long action is not echoed back (it could make the reply too large to send).
            let echoed = action.unicodeScalars.count <= Limits.maxRequestIdLength ? action : nil
            return .rejected(requestId: requestId, action: echoed, error: ServiceError(.unknownAction, message), deadLetter: false)
        }

        do {
            let command = try FieldReader(json).command(for: action)
            return .request(Request(requestId: requestId, command: command))
        } catch let failure as FieldFailure {
            return .rejected(requestId: requestId, action: action, error: .invalid(failure.message), deadLetter: failure.structural)
        } catch {
            return .rejected(requestId: requestId, action: action, error: .invalid("invalid request"), deadLetter: true)
        }
    }

    private func malformed(_ message: String, action: String? = nil) -> Outcome {
        .rejected(requestId: nil, action: action, error: .invalid(message), deadLetter: true)
    }
}

private struct FieldFailure: Error {
    let message: String
    /// Wrong type or missing (dead-lettered) rather than a value out of range.
    let structural: Bool
}

private struct FieldReader {
    let json: JSON
    init(_ json: JSON) { self.json = json }

    func command(for action: String) throws -> Command {
        switch action {
        case "add_item":
            return .addItem(
                userId: try id("user_id"), productId: try id("product_id"),
                quantity: try int("quantity", in: 1...Limits.maxQuantity))
        case "get_cart": return .getCart(userId: try id("user_id"))
        case "update_item":
            return .updateItem(
                userId: try id("user_id"), productId: try id("product_id"),
                quantity: try int("quantity", in: 0...Limits.maxQuantity))
        case "remove_item": return .removeItem(userId: try id("user_id"), productId: try id("product_id"))
        case "create_order": return .createOrder(userId: try id("user_id"))
        case "list_orders":
            return .listOrders(
                userId: try id("user_id"), limit: try optionalInt("limit", in: 1...Limits.maxListOrdersLimit),
                beforeOrderId: try optionalInt64("before_order_id", min: 1))
        case "get_order": return .getOrder(userId: try id("user_id"), orderId: try id("order_id"))
        case "list_carts":
            let limit = try optionalInt("limit", in: 1...Limits.maxListCartsLimit) ?? Limits.defaultListCartsLimit
            let after = try optionalInt64("after_cart_id", min: 0)
            return .listCarts(limit: limit, afterCartId: after)
        default:
            throw FieldFailure(message: "unknown action", structural: false)
        }
    }

    func integer(_ name: String) throws -> Int64? {
        switch json[name] {
        case nil, .null?: return nil
        case .int(let v)?: return v
        case .number?: throw FieldFailure(message: "\(name) must be a 64-bit integer", structural: true)
        case let other?: throw FieldFailure(message: "\(name) must be an integer, not \(other.typeName)", structural: true)
        }
    }

    func id(_ name: String) throws -> Int64 {
        guard let v = try integer(name) else { throw FieldFailure(message: "\(name) is required", structural: true) }
        guard v >= 1 else { throw FieldFailure(message: "\(name) must be a positive integer", structural: false) }
        return v
    }

    func int(_ name: String, in range: ClosedRange<Int>) throws -> Int {
        guard let v = try integer(name) else { throw FieldFailure(message: "\(name) is required", structural: true) }
        guard v >= range.lowerBound, v <= range.upperBound else {
            throw FieldFailure(message: "\(name) must be between \(range.lowerBound) and \(range.upperBound)", structural: false)
        }
        return Int(v)
    }

    func optionalInt(_ name: String, in range: ClosedRange<Int>) throws -> Int? {
        guard let v = try integer(name) else { return nil }
        guard v >= range.lowerBound, v <= range.upperBound else {
            throw FieldFailure(message: "\(name) must be between \(range.lowerBound) and \(range.upperBound)", structural: false)
        }
        return Int(v)
    }

    func optionalInt64(_ name: String, min: Int64) throws -> Int64? {
        guard let v = try integer(name) else { return nil }
        guard v >= min else { throw FieldFailure(message: "\(name) must be at least \(min)", structural: false) }
        return v
    }
}
