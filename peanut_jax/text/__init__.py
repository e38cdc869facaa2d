"""Host-side tokenizers (run outside jit; numpy in, numpy out)."""

from peanut_jax.text.bpe import MAX_TOKENS, RobertaTokenizer, TokenizerFileError

__all__ = ["MAX_TOKENS", "RobertaTokenizer", "TokenizerFileError"]
