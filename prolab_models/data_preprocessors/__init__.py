from prolab_models.data_preprocessors.channels_last import ChannelsLastSegDataPreProcessor

__all__ = ["ChannelsLastSegDataPreProcessor"]
