"""SerfClient.query(expect=N): returns at the N-th answer and the connection survives Serf's late records."""

from __future__ import annotations

import asyncio

import msgpack

from connector.serf import SerfClient


async def fake_serf(reader, writer) -> None:
    """handshake, query (ack, one response, then 'done' 0.2 s later), members."""
    pack = msgpack.packb
    unpacker = msgpack.Unpacker(raw=False)
    header = None
    while chunk := await reader.read(65536):
        unpacker.feed(chunk)
        for item in unpacker:
            if header is None and item.get("Command") in ("handshake", "query"):
                header = item
                continue
            request, header = header or item, None
            seq = request["Seq"]
            ok = pack({"Seq": seq, "Error": ""})
            if request["Command"] == "query":
                writer.write(ok)
                writer.write(ok + pack({"Type": "response", "From": "n2", "Payload": b"x"}))
                await writer.drain()
                await asyncio.sleep(0.2)
                writer.write(ok + pack({"Type": "done", "From": "", "Payload": None}))
            elif request["Command"] == "members":
                writer.write(ok + pack({"Members": []}))
            else:
                writer.write(ok)
    writer.close()


def test_query_returns_at_the_expected_answer_and_the_late_done_is_dropped():
    async def scenario():
        server = await asyncio.start_server(fake_serf, "127.0.0.1", 0)
        client = SerfClient("127.0.0.1", server.sockets[0].getsockname()[1])
        await client.connect(timeout=2)
        answers = await client.query("q", b"", nodes=["n2"], timeout=5, expect=1)
        await asyncio.sleep(0.4)  # the 'done' arrives after the caller left
        members = await client.members()
        await client.close()
        server.close()
        return answers, members

    answers, members = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert answers == [{"from": "n2", "payload": b"x"}]
    assert members == []
