from prolab_models.segmentors.property_encoder_decoder import PropertyEncoderDecoder

__all__ = ["PropertyEncoderDecoder"]
