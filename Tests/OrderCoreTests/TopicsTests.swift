import Foundation
import Kafka
import Testing

@testable import OrderCore

@Suite("Topics (topics.yaml)", .timeLimit(.minutes(1)))
struct TopicsTests {
    func fails(_ yaml: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(throws: ConfigurationError.self, sourceLocation: sourceLocation) { try Topics.parse(yaml: yaml) }
    }

    @Test func theRepositoryFileDeclaresAllFourteenTopicsWithTheirRoles() throws {
        let topics = try Fixture.repoTopics()
        // The contract's fourteen, plus the optional metrics topic.
        #expect(topics.entries.count == 15)
        #expect(Set(topics.entries.keys) == Set(Topics.requiredLogicalNames.keys).union(["order_service_metrics"]))
        #expect(topics.metricsTopic == "order_service_metrics")
        for (logical, role) in Topics.requiredLogicalNames {
            #expect(topics.entries[logical]?.role == role, "\(logical)")
            #expect(topics.entries[logical]?.logicalName == logical)
        }
        #expect(topics.cartRequests == "cart_requests")
        #expect(topics.orderRequests == "order_requests")
        #expect(topics.adminRequests == "admin_requests")
        #expect(topics.productRequests == "get_product_details")
        #expect(topics.productReplies == "product_details")
        #expect(topics.inventoryCheckRequests == "inventory_check")
        #expect(topics.inventoryCheckReplies == "inventory_check_results")
        #expect(topics.deductionRequests == "inventory_deduction")
        #expect(topics.deductionResults == "inventory_deduction_results")
        #expect(topics.notifications == "order_notification")
        #expect(topics.deadLetters == "order_service_dlq")
        #expect(topics.responseTopicNames == ["cart_responses", "order_responses", "admin_responses"])
        #expect(topics.entries["cart_requests"]?.responseTopic == "cart_responses")
        #expect(topics.entries["admin_requests"]?.responseTopic == "admin_responses")
        #expect(topics.specs.count == 15)
        #expect(topics.specs.map(\.name) == topics.specs.map(\.name).sorted())
    }

    @Test func theRepositoryFileCarriesPartitionsAndConfigs() throws {
        let topics = try Fixture.repoTopics()
        let cart = try #require(topics.entries["cart_requests"]?.spec)
        #expect(cart.partitions == 8)
        #expect(cart.replicationFactor == 1)
        #expect(cart.configs == ["retention.ms": "604800000"])
        #expect(topics.entries["admin_requests"]?.spec.partitions == 1)
        #expect(topics.entries["order_service_dlq"]?.spec.configs["retention.ms"] == "2592000000")
        // `load(path:)` reads the same file.
        #expect(try Topics.load(path: Fixture.repoTopicsYAMLPath) == topics)
    }

    @Test func requestKindsAndDefaultResponseTopics() throws {
        let topics = try Fixture.repoTopics()
        #expect(topics.requestKind(ofTopic: "cart_requests") == .cart)
        #expect(topics.requestKind(ofTopic: "order_requests") == .order)
        #expect(topics.requestKind(ofTopic: "admin_requests") == .admin)
        #expect(topics.requestKind(ofTopic: "cart_responses") == nil)
        #expect(topics.requestKind(ofTopic: "Cart_Requests") == nil)
        #expect(topics.defaultResponseTopic(forRequestTopic: "cart_requests") == "cart_responses")
        #expect(topics.defaultResponseTopic(forRequestTopic: "order_requests") == "order_responses")
        #expect(topics.defaultResponseTopic(forRequestTopic: "admin_requests") == "admin_responses")
        #expect(topics.defaultResponseTopic(forRequestTopic: "cart_responses") == nil)
        #expect(topics.defaultResponseTopic(forRequestTopic: "nope") == nil)
    }

    @Test func renamingATopicChangesEveryUse() throws {
        let renames = [
            "cart_requests": "shop.cart-requests.v2", "cart_responses": "shop.cart-responses.v2",
            "order_requests": "o_in", "admin_requests": "a_in", "get_product_details": "p_in", "product_details": "p_out",
            "inventory_check": "i_in", "inventory_check_results": "i_out", "inventory_deduction": "d_in",
            "inventory_deduction_results": "d_out", "order_notification": "events", "order_service_dlq": "dlq",
        ]
        let topics = try Topics.parse(yaml: Fixture.yaml(names: renames))
        #expect(topics.cartRequests == "shop.cart-requests.v2")
        #expect(topics.orderRequests == "o_in")
        #expect(topics.adminRequests == "a_in")
        #expect(topics.productRequests == "p_in")
        #expect(topics.productReplies == "p_out")
        #expect(topics.inventoryCheckRequests == "i_in")
        #expect(topics.inventoryCheckReplies == "i_out")
        #expect(topics.deductionRequests == "d_in")
        #expect(topics.deductionResults == "d_out")
        #expect(topics.notifications == "events")
        #expect(topics.deadLetters == "dlq")
        #expect(topics.requestKind(ofTopic: "shop.cart-requests.v2") == .cart)
        #expect(topics.requestKind(ofTopic: "cart_requests") == nil)
        #expect(topics.defaultResponseTopic(forRequestTopic: "shop.cart-requests.v2") == "shop.cart-responses.v2")
        #expect(topics.responseTopicNames == ["shop.cart-responses.v2", "order_responses", "admin_responses"])
        #expect(topics.name("cart_responses") == "shop.cart-responses.v2")
    }

    @Test func renamingTheRepositoryFileChangesCartRequests() throws {
        let original = try Fixture.repoTopicsYAML()
        let edited = original.replacingFirst("    name: cart_requests\n", with: "    name: carts-in\n")
        #expect(edited != original)
        let topics = try Topics.parse(yaml: edited)
        #expect(topics.cartRequests == "carts-in")
        #expect(topics.entries["cart_requests"]?.spec.partitions == 8)
    }

    @Test func nameDefaultsToTheLogicalName() throws {
        let yaml = Fixture.yaml().replacingFirst("    name: cart_requests\n", with: "")
        #expect(try Topics.parse(yaml: yaml).cartRequests == "cart_requests")
        #expect(try Topics.parse(yaml: yaml).entries["cart_requests"]?.spec.partitions == 1)
    }

    @Test(arguments: Topics.requiredLogicalNames.keys.sorted())
    func aMissingTopicIsAnError(_ logical: String) {
        fails(Fixture.yaml(dropping: [logical]))
    }

    @Test func aWrongRoleIsAnError() {
        fails(Fixture.yaml(roles: ["cart_responses": "request"], responses: ["cart_responses": "order_responses"]))
        fails(Fixture.yaml(roles: ["order_service_dlq": "event"]))
        fails(Fixture.yaml(roles: ["product_details": "upstream_request"]))
        fails(Fixture.yaml(roles: ["order_notification": "broadcast"]))
        fails(Fixture.yaml(roles: ["order_notification": "Event"]))
    }

    @Test func aMissingRoleIsAnError() {
        fails(Fixture.yaml().replacingFirst("    role: event\n", with: ""))
    }

    @Test func requestTopicsNeedAResponseTopicThatIsAResponseTopic() {
        fails(Fixture.yaml(responses: ["cart_requests": nil]))
        fails(Fixture.yaml(responses: ["order_requests": "order_notification"]))
        fails(Fixture.yaml(responses: ["admin_requests": "no_such_topic"]))
        // The response topic is a logical name, not a real one.
        fails(Fixture.yaml(names: ["cart_responses": "carts-out"], responses: ["cart_requests": "carts-out"]))
    }

    @Test func anExtraRequestTopicIsCheckedToo() {
        fails(Fixture.yaml(extra: "  more_requests:\n    role: request\n"))
        #expect(throws: Never.self) {
            try Topics.parse(yaml: Fixture.yaml(extra: "  more_requests:\n    role: request\n    response_topic: cart_responses\n"))
        }
    }

    @Test func duplicateRealNamesAreAnError() {
        fails(Fixture.yaml(names: ["cart_responses": "order_responses"]))
        fails(Fixture.yaml(names: ["order_notification": "shared", "order_service_dlq": "shared"]))
        fails(Fixture.yaml(extra: "  copy:\n    name: cart_requests\n    role: event\n"))
    }

    @Test(arguments: ["\"\"", "\"bad name\"", "\"caf\u{E9}\"", "\"a/b\"", "\"\u{0441}art\"", "\"x:y\""])
    func invalidRealNamesAreAnError(_ name: String) {
        fails(Fixture.yaml(names: ["order_notification": name]))
    }

    @Test func partitionsAndReplicationMustBePositive() {
        fails(Fixture.yaml().replacingFirst("    role: event\n", with: "    role: event\n    partitions: 0\n"))
        fails(Fixture.yaml().replacingFirst("    role: event\n", with: "    role: event\n    replication_factor: -1\n"))
        // Beyond what Kafka's protocol can carry: an error, not a trap in the conversion.
        fails(Fixture.yaml().replacingFirst("    role: event\n", with: "    role: event\n    partitions: 3000000000\n"))
        fails(Fixture.yaml().replacingFirst("    role: event\n", with: "    role: event\n    replication_factor: 40000\n"))
    }

    @Test(arguments: ["", "topics: []", "topics: 5", "nothing: {}", "- a\n- b", "topics:\n  cart_requests: 1\n", "topics: {\n", "\t:"])
    func malformedFilesAreAnError(_ yaml: String) {
        fails(yaml)
    }

    @Test func anUnreadableFileIsAConfigurationError() {
        #expect(throws: ConfigurationError.self) {
            try Topics.load(path: Fixture.repoTopicsYAMLPath + ".does-not-exist")
        }
    }
}

extension String {
    func replacingFirst(_ target: String, with replacement: String) -> String {
        guard let r = range(of: target) else { return self }
        return replacingCharacters(in: r, with: replacement)
    }
}
