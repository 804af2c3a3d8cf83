"""torch.nn.modules.loss."""
from dtrain.nn.loss import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss,  # noqa: F401
                            HuberLoss, KLDivLoss, L1Loss, MSELoss, NLLLoss, SmoothL1Loss)
from dtrain.nn.loss import (CosineEmbeddingLoss, GaussianNLLLoss, HingeEmbeddingLoss,  # noqa: F401
                            MarginRankingLoss, MultiLabelMarginLoss, MultiLabelSoftMarginLoss,
                            MultiMarginLoss, PoissonNLLLoss, SoftMarginLoss, TripletMarginLoss)
