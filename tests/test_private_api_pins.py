"""Pins for the private APIs of our dependencies that the code still uses, one test each: an upgrade that renames or
changes one fails here, naming it, instead of somewhere downstream. Each pin says where the use is and why there is no
public way. (docs/architecture.md lists them.)"""

from __future__ import annotations

import inspect
import subprocess
from pathlib import Path

from llama_index.core.chat_engine import CondenseQuestionChatEngine
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.query_engine import RetrieverQueryEngine

from app.composition import build_query_engines, open_runtime


def test_milvus_lite_server_manager_keeps_its_servers_by_file_path(settings) -> None:
    """integrations/adapters/milvus_store.py (release_lite_store, MilvusStore.lite_socket): milvus-lite has no public "is
    a server running for this file?" (nor its socket); releasing a file it does not serve raises, so the store reads
    ``server_manager_instance._servers`` (a dict keyed by path)."""
    from milvus_lite.server_manager import server_manager_instance

    runtime = open_runtime(settings)
    uri = Path(settings.storage.milvus_uri()).resolve()
    try:
        assert isinstance(server_manager_instance._servers, dict)
        assert uri in {Path(path) for path in server_manager_instance._servers}
    finally:
        runtime.close()
    assert uri not in {Path(path) for path in server_manager_instance._servers}


def test_milvus_lite_server_keeps_its_process_in__p_and_its_file_in__db_file(tmp_path: Path) -> None:
    """integrations/adapters/milvus_store.py StoreServer: milvus-lite's ``Server`` exposes neither its child process (``_p``: exit code,
    wait) nor its file (``_db_file``: the lock path given to the TCP server's arguments)."""
    from integrations.adapters.milvus_store import StoreServer

    db = tmp_path / "milvus.db"
    server = StoreServer(db, port=0)
    with server:
        assert isinstance(server._server._p, subprocess.Popen) and server._server._p.poll() is None
        assert Path(server._server._db_file).resolve() == db.resolve()
        assert server.running()
    assert server.exit_code() is None and not server.running()


def test_ingestion_pipeline_runs_its_upserts_through__handle_upserts() -> None:
    """app/ingestion.py overrides ``IngestionPipeline._handle_upserts`` (keep a changed piece's chunks until its new ones
    are made): no public hook decides which nodes a docstore-backed run re-processes."""
    signature = inspect.signature(IngestionPipeline._handle_upserts)
    assert list(signature.parameters) == ["self", "nodes"]
    assert "self._handle_upserts(" in inspect.getsource(IngestionPipeline.run)
    from app.ingestion import ReplacingPipeline

    assert ReplacingPipeline._handle_upserts is not IngestionPipeline._handle_upserts


def test_the_query_and_chat_engine_bases_keep_the_attributes_our_subclasses_use(runtime) -> None:
    """app/query_engine.py (DocsQueryEngine._query) and app/chat.py (DocsChatEngine) are subclasses that use the bases'
    protected members: the retriever, postprocessors, synthesizer and postprocessing step of ``RetrieverQueryEngine``;
    the query engine, memory, LLM, condense prompt and tool-output step of ``CondenseQuestionChatEngine``."""
    from app.chat import DocsChatEngine

    engine, streaming = build_query_engines(runtime)
    assert engine._retriever is streaming._retriever and engine._node_postprocessors
    assert engine._response_synthesizer._streaming is False and streaming._response_synthesizer._streaming is True
    assert callable(RetrieverQueryEngine._apply_node_postprocessors)
    chat = DocsChatEngine.from_runtime(runtime)
    for name in ("_query_engine", "_memory", "_llm", "_condense_question_prompt"):
        assert hasattr(chat, name), name
    for name in ("_condense_question", "_acondense_question", "_get_tool_output_from_response"):
        assert callable(getattr(CondenseQuestionChatEngine, name)), name
