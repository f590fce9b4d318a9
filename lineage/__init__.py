"""lineage: the historical lineage of language models, trained and scored the same way.

Public names: :class:`Capability`, :class:`FitMode`, :class:`TokenBatch`, :class:`Batching`,
:class:`Vocabulary`.
"""

from lineage.data.vocab import Vocabulary
from lineage.interface import Batching, Capability, FitMode, TokenBatch

__version__ = "0.1.0"

__all__ = ["Batching", "Capability", "FitMode", "TokenBatch", "Vocabulary", "__version__"]
