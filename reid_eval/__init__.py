"""reid_eval: evaluation of video person re-ID models on the video re-ID benchmarks, as a library.

    import reid_eval
    res = reid_eval.evaluate("sinet_r50.mars", dataset="mars", root="/data")   # zoo, timm, hf-hub:, local-dir:
    res = reid_eval.evaluate(my_model, dataset="lsvid", root="/data")          # any clips -> embeddings module
    res.metrics                # {'mAP': .., 'rank1': .., 'rank5': .., 'rank10': .., 'rank20': .., 'mINP': ..}, %
    res.query, res.gallery     # Embeddings: features, pids, camids, tracklet names
    feats = reid_eval.extract(model, tracklets)                                 # your own tracklets
    feats = reid_eval.extract(model, [[crop0, crop1, ...], ...])                # crops: PIL, uint8 arrays, tensors
    vt = reid_eval.read_video_tracks("cam1.mp4", "cam1.txt")                    # a video + its tracker's output
    feats = reid_eval.extract(model, vt.tracklets())                            # one embedding per track
    res = reid_eval.evaluate(..., rerank=reid_eval.RerankOptions(), aqe=reid_eval.AQEOptions())
    res.variants               # {'rerank': {...}, 'aqe': {...}, 'aqe_rerank': {...}}: beside res.metrics, not in it

Supported benchmarks: MARS, LS-VID, iLIDS-VID, PRID-2011 and DukeMTMC-VideoReID (:mod:`reid_eval.datasets`), under
the released SINet protocol. The commands (``sinet-eval``, ``sinet-extract``, ...) are thin layers over this API.
"""
from .datasets import SPECS, DatasetSpec, get_spec, load_dataset
from .errors import EvalError, SinetTimmError
from .evaluator import (
    EvalOptions,
    ReIDEvaluator,
    evaluate,
    evaluate_split,
    extract,
    rank,
    rank_variants,
    resolve_device,
)
from .models import FrameAverage, LoadedModel, load_model
from .postprocess import AQEOptions, RerankOptions
from .results import Embeddings, EvalResult, SplitResult
from .tracklets import FrameSelection, InputTracklet, find_tracklets
from .video import VideoOptions, read_video_tracks

__all__ = [
    'SPECS', 'AQEOptions', 'DatasetSpec', 'Embeddings', 'EvalError', 'EvalOptions', 'EvalResult', 'FrameAverage',
    'FrameSelection', 'InputTracklet', 'LoadedModel', 'ReIDEvaluator', 'RerankOptions', 'SinetTimmError',
    'SplitResult', 'VideoOptions', 'evaluate', 'evaluate_split', 'extract', 'find_tracklets', 'get_spec',
    'load_dataset', 'load_model', 'rank', 'rank_variants', 'read_video_tracks', 'resolve_device',
]
