//! Placeholder: the amqprs + LMDB shell lands here.
