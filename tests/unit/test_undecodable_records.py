from __future__ import annotations

from aiokafka.errors import ConsumerStoppedError, CorruptRecordException, KafkaConnectionError

from refundflow_shared.undecodable_records import is_unreadable


def test_only_a_record_the_client_could_not_read_is_read_around() -> None:
    assert is_unreadable(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"))
    assert is_unreadable(CorruptRecordException())
    # A broker's error is FastStream's to wait out; a stopped consumer ends its loop, quietly.
    assert not is_unreadable(KafkaConnectionError())
    assert not is_unreadable(ConsumerStoppedError())
