from integrations.local_embedding import LocalMiniLMEmbedding


def test_token_count_is_the_word_pieces_the_model_runs_on_without_padding_and_cut_at_max_tokens() -> None:
    embedder = LocalMiniLMEmbedding(max_tokens=32)
    short, long = "hello world", " ".join(["documentation"] * 200)
    assert embedder.count_tokens([short]) == 4  # [CLS] hello world [SEP]
    assert embedder.count_tokens([long]) == 32
    # Counted together, the short text is not padded to the long one's length.
    assert embedder.count_tokens([short, long]) == 36
