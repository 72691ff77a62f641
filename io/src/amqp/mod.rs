//! AMQP plumbing shared by the endpoint and the service: URL parsing, connecting, channel callbacks.
